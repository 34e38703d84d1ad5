# MIDOG 2025 Track 2 algorithm container: python process.py reads /input, writes /output.
#
# One build argument chooses the torch build (the same torch 2.14.1 the tests run, CPU kernels included):
#   TORCH_VARIANT=cu126 (default)  CUDA 12.6 (download.pytorch.org/whl/cu126). Under CUDA's minor-version
#                                  compatibility a 12.x runtime runs on NVIDIA driver >= 525.60.13 (NVIDIA, "CUDA
#                                  Compatibility", docs.nvidia.com/deploy/cuda-compatibility/); the 12.6 toolkit ships
#                                  with 560.28.03 (CUDA 12.6 release notes, table 3). Grand Challenge runs jobs on
#                                  SageMaker ml.g4dn (T4, compute 7.5, in the cu126 build's targets); SageMaker's GPU
#                                  hosts run drivers 470 to 550 (docs.aws.amazon.com/sagemaker/latest/dg/
#                                  inference-gpu-drivers.html), so a 13.x build would not start there. 2.14 is the last
#                                  torch with a CUDA 12 build (pytorch/pytorch PR 194367, RELEASE.md: 2.14 ships
#                                  CUDA 12.6, 13.0 and 13.2).
#   TORCH_VARIANT=cu130            PyPI's own wheel, CUDA 13.0: needs driver >= 580.65.06. For hosts that have one.
#   TORCH_VARIANT=cpu              no CUDA at all (download.pytorch.org/whl/cpu): for a "No GPU" phase; none of
#                                  the CUDA libraries, which are most of the other variants' size.
# With a driver too old or no GPU the container says so in one line (amf.devices.resolve) and runs on the CPU, and a
# GPU that fails later reruns the stack on the CPU (amf.inference.pipeline): the same JSON either way.
#
# Locked: the base image by digest (python:3.11-slim-bookworm as docker-library published it, docker-library/python
# issue 923; refresh with `docker buildx imagetools inspect python:3.11-slim-bookworm`), and the whole Python closure
# by hash (locks/$TORCH_VARIANT.txt, made by tools/lock.sh from requirements.txt; pip --require-hashes).
FROM --platform=linux/amd64 python:3.11-slim-bookworm@sha256:6d2502238109c929569ae99355e28890c438cb11bc88ef02cd189c173b3db07c

ARG TORCH_VARIANT=cu126

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TORCH_HOME=/tmp/torch \
    MPLCONFIGDIR=/tmp/matplotlib

# The platform runs the container as an unprivileged user.
RUN groupadd --system user && useradd --system --create-home --no-log-init --gid user user \
    && mkdir -p /opt/app /input /output && chown user:user /opt/app /output

WORKDIR /opt/app

# Every distribution at the version and hash the lock names, nothing resolved at build time. A variant whose lock
# was never generated stops here with the command that makes it.
COPY locks/ /opt/app/locks/
RUN test -f "locks/$TORCH_VARIANT.txt" || { echo "locks/$TORCH_VARIANT.txt is missing: run tools/lock.sh $TORCH_VARIANT" \
        "where download.pytorch.org is reachable, and commit it" >&2; exit 1; } \
    && python -m pip install --no-cache-dir --disable-pip-version-check --require-hashes --no-deps \
        -r "locks/$TORCH_VARIANT.txt" \
    && rm -rf locks

COPY --chown=user:user amf/*.py /opt/app/amf/
COPY --chown=user:user amf/inference /opt/app/amf/inference
COPY --chown=user:user weights /opt/app/weights
COPY --chown=user:user process.py /opt/app/
COPY --chown=user:user test/input /opt/app/test/input

# Warm the frozen-graph cache once at build time (amf.inference.loading.load_engine): every job then starts without
# importing timm or tracing (docs/benchmark.md, "Cold start: what it is made of, and the graph cache"). Keyed by
# the members' sha256.
ENV AMF_GRAPH_CACHE=/opt/app/graph-cache
USER user
RUN python process.py --input test/input --output /tmp/warm && rm -rf /tmp/warm

ENTRYPOINT ["python", "process.py"]
