"""The model and its inputs: tiling, video sampling, prompts, grounding and generation backends.

Nothing here imports Gradio.
"""
