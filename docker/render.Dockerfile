# syntax=docker/dockerfile:1
# Render worker for `dr-data generate`: Blender Cycles (the bpy 5.0.1 wheel) on one NVIDIA GPU,
# under Ray. The KubeRay head, its GPU workers and the RayJob submitter all run this image, so every
# node has the same package and the same Ray (the pin in constraints.txt).
#
#   docker build -f docker/render.Dockerfile -t dr-render:0.1.0 .      (from the repository root)

# Cycles and OpenImageDenoise load only the driver (libcuda, libnvoptix), which the NVIDIA container
# toolkit mounts; nothing uses the CUDA toolkit libraries, so the small "base" flavour is enough.
# CUDA 12.2 because it stands for driver 535, the oldest Blender's OptiX takes: the container
# toolkit checks the base's NVIDIA_REQUIRE_CUDA when the container starts, not at the first clip.
FROM nvidia/cuda:12.2.2-base-ubuntu22.04

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive

# Python 3.11 (the bpy 5.0.1 wheel exists for CPython 3.11 only) from the deadsnakes PPA, whose key
# is checked against its fingerprint; the shared libraries `import bpy` loads
# (scripts/install-system-deps.sh, plus libegl1); wget for KubeRay's exec health probes.
# Unpinned: Ubuntu replaces package versions in place with security updates, so a pin breaks the
# build within weeks; the base image tag fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && install -d -m 0755 /etc/apt/keyrings \
 && curl -fsSL "https://keyserver.ubuntu.com/pks/lookup?op=get&search=0xF23C5A6CF475977595C89F51BA6932366A755776" \
    | gpg --dearmor -o /etc/apt/keyrings/deadsnakes.gpg \
 && gpg --show-keys --with-colons /etc/apt/keyrings/deadsnakes.gpg \
    | grep -q '^fpr:::::::::F23C5A6CF475977595C89F51BA6932366A755776:$' \
 && echo "deb [signed-by=/etc/apt/keyrings/deadsnakes.gpg] https://ppa.launchpadcontent.net/deadsnakes/ppa/ubuntu jammy main" \
    > /etc/apt/sources.list.d/deadsnakes.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
    python3.11 python3.11-venv \
    libx11-6 libxrender1 libxfixes3 libxi6 libxkbcommon0 libsm6 libice6 libxext6 libgl1 libegl1 \
    wget \
 && apt-get purge -y --auto-remove curl gnupg \
 && rm -rf /var/lib/apt/lists/*

# OptiX needs the driver's graphics libraries as well as compute.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python3.11 -m venv /opt/venv

# Dependencies first, from the metadata alone (a stub package and README), so that changing the
# code or the README does not download bpy and Ray again. Exact versions come from constraints.txt, Ray's included. The `default`
# extra of Ray is its dashboard and node agent: job submission and KubeRay's health checks use them.
# s3fs (the `s3` extra) lets runs and manifests live at s3:// URLs.
WORKDIR /opt/dr/src
COPY pyproject.toml constraints.txt ./
# The stub's build folders go: setuptools copies a source file into build/ only when it is newer
# than the copy there, and COPY keeps the files' old times, so the stub would end up in the wheel.
RUN mkdir dr && touch dr/__init__.py README.md \
 && pip install --no-cache-dir -c constraints.txt '.[render,cluster,s3]' 'ray[default]' \
 && rm -rf dr build dr.egg-info README.md
COPY README.md ./
COPY dr ./dr
RUN pip install --no-cache-dir --no-deps --force-reinstall . \
 && rm -rf build dr.egg-info

# Everything the commands write goes to the run folder (a URL here, usually) and the cache folder;
# the caches of CUDA's and OptiX's kernel compilers go into the cache folder too. Mount a volume at
# DR_CACHE_DIR to keep them (and the downloaded assets) across containers.
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash dr \
 && install -d -o dr -g dr /cache/dr
ENV HOME=/home/dr \
    DR_CACHE_DIR=/cache/dr \
    CUDA_CACHE_PATH=/cache/dr/cuda \
    CUDA_CACHE_MAXSIZE=4294967296 \
    OPTIX_CACHE_PATH=/cache/dr/optix \
    RAY_USAGE_STATS_ENABLED=0
# numeric, so that Kubernetes' runAsNonRoot can check it
USER 1000:1000
WORKDIR /home/dr

CMD ["dr-data", "--help"]
