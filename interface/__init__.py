"""The Gradio user interface. Never imports torch; knows only the Backend interface."""
