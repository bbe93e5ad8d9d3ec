# InternVL 2.5 demo on a CUDA GPU.
#   docker build -t internvl-demo .
#   docker run --gpus all -p 7860:7860 -v hf-cache:/home/demo/.cache/huggingface internvl-demo
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HOME=/home/demo/.cache/huggingface

# The distribution's python3 for this base image; its version follows the image tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 demo
WORKDIR /home/demo/app

# Requirements first, in their own layer: code changes do not reinstall torch.
COPY requirements.txt .
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install -r requirements.txt
ENV PATH=/opt/venv/bin:$PATH

COPY --chown=1000:1000 . .
USER 1000
RUN mkdir -p /home/demo/.cache/huggingface
VOLUME ["/home/demo/.cache/huggingface"]

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=4)"]

# Flags or INTERNVL_* variables choose the model, e.g. -e INTERNVL_MODEL=OpenGVLab/InternVL2_5-8B-MPO-hf
ENTRYPOINT ["python3", "app.py"]
