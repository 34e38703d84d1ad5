# MIDOG 2025 Track 2 algorithm container: python process.py reads /input, writes /output.
# One torch, one CUDA: a slim Python base, and the pinned torch 2.14.1 from PyPI, a CUDA 13.0 build that carries its
# own CUDA runtime and cuDNN (the nvidia-*-cu13 wheels). The host needs only the NVIDIA driver, >= 580 (CUDA 13.0's
# minimum on Linux). With an older driver or no GPU the container says so in one line and runs on the CPU, with the
# same JSON (amf.inference.engine.start_device). Runtime packages only: tests and training extras are in requirements-dev.txt.
FROM --platform=linux/amd64 python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TORCH_HOME=/tmp/torch \
    MPLCONFIGDIR=/tmp/matplotlib

# The platform runs the container as an unprivileged user.
RUN groupadd --system user && useradd --system --create-home --no-log-init --gid user user \
    && mkdir -p /opt/app /input /output && chown user:user /opt/app /output

WORKDIR /opt/app

# The exact versions the tests ran with.
COPY --chown=user:user requirements.txt /opt/app/
RUN python -m pip install --no-cache-dir --disable-pip-version-check -r requirements.txt

COPY --chown=user:user amf/*.py /opt/app/amf/
COPY --chown=user:user amf/inference /opt/app/amf/inference
COPY --chown=user:user weights /opt/app/weights
COPY --chown=user:user process.py /opt/app/
COPY --chown=user:user test/input /opt/app/test/input

# Warm the frozen-graph cache once at build time (amf.inference.loading.load_engine): every job then starts without
# importing timm or tracing, about 4 s instead of 9 s on a 2-core CPU. Keyed by the members' sha256.
ENV AMF_GRAPH_CACHE=/opt/app/graph-cache
USER user
RUN python process.py --input test/input --output /tmp/warm && rm -rf /tmp/warm

ENTRYPOINT ["python", "process.py"]
