# syntax=docker/dockerfile:1
# Trainer for `dr-train`: the forward and inverse renderers on NVIDIA GPUs, one process per GPU under
# `accelerate launch` (one node or several). No Blender: training reads the shards `dr-data` wrote.
#
#   docker build -f docker/train.Dockerfile -t dr-train:0.1.0 .      (from the repository root)

# torch's Linux wheel brings its own CUDA and cuDNN libraries (the nvidia-* wheels), so the image
# needs only the driver, which the NVIDIA container toolkit mounts: a plain Python 3.11 image.
FROM python:3.11-slim-bookworm

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python3.11 -m venv /opt/venv

# Dependencies first, from the metadata alone (a stub package and README), so that changing the code
# does not download torch again. Exact versions come from constraints.txt (torch 2.13.0: on Linux the
# CUDA build). s3fs (the `s3` extra) lets --data name s3:// runs.
WORKDIR /opt/dr/src
COPY pyproject.toml constraints.txt ./
RUN mkdir dr && touch dr/__init__.py README.md \
 && pip install --no-cache-dir -c constraints.txt '.[train,s3]' \
 && rm -rf dr build dr.egg-info README.md
COPY README.md ./
COPY dr ./dr
RUN pip install --no-cache-dir --no-deps --force-reinstall . \
 && rm -rf build dr.egg-info

# Training runs, the base model and hub downloads: mount volumes at /runs and DR_CACHE_DIR. Hugging
# Face's and torch's caches go into the cache folder, not the home folder.
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash dr \
 && install -d -o dr -g dr /cache/dr /runs
ENV HOME=/home/dr \
    DR_CACHE_DIR=/cache/dr \
    HF_HOME=/cache/dr/huggingface \
    TORCH_HOME=/cache/dr/torch \
    TRITON_CACHE_DIR=/cache/dr/triton
USER 1000:1000
WORKDIR /home/dr

CMD ["dr-train", "--help"]
