# MIDOG 2025 Track 2 algorithm container: python process.py reads /input, writes /output.
#
# One build argument chooses the torch build (locks/$TORCH_VARIANT.txt, made by tools/lock.sh):
#   TORCH_VARIANT=cu128 (default)  PyPI's torch 2.10.0, the torch the tests and .venv run: a CUDA 12.8 build, the last
#                                  torch release on PyPI built for CUDA 12 (2.11 and later are CUDA 13). Its kernels
#                                  are for sm_70, sm_75 (the T4), sm_80, sm_86, sm_90, sm_100 and sm_120, with no PTX
#                                  (torch._C._cuda_getArchFlags(), which tools/verify_docker.sh prints from the
#                                  image). Under CUDA's minor-version compatibility a 12.x runtime runs on NVIDIA
#                                  driver >= 525.60.13 (NVIDIA, "CUDA Compatibility",
#                                  docs.nvidia.com/deploy/cuda-compatibility/).
#                                  Grand Challenge runs jobs on SageMaker ml.g4dn (T4, compute 7.5); SageMaker's
#                                  GPU hosts run drivers 470 to 550 (docs.aws.amazon.com/sagemaker/latest/dg/
#                                  inference-gpu-drivers.html), so a 13.x build would not start there.
#   TORCH_VARIANT=cu130            PyPI's torch 2.14.1, CUDA 13.0 (locks/overrides/cu130.txt): needs driver
#                                  >= 580.65.06. For hosts that have one.
#   TORCH_VARIANT=cpu              no CUDA at all (download.pytorch.org/whl/cpu): for a "No GPU" phase. Its lock
#                                  needs the PyTorch index, so it is not committed; tools/lock.sh cpu makes it.
# With a driver too old or no GPU the container says so in one line (amf.devices.resolve) and runs on the CPU, and a
# GPU that fails later reruns the stack on the CPU (amf.inference.pipeline): the same JSON either way.
#
# Locked: the base image by digest (python:3.11-slim-bookworm as docker-library published it, docker-library/python
# issue 923; refresh with `docker buildx imagetools inspect python:3.11-slim-bookworm`), and the whole Python closure
# by hash (pip --require-hashes --no-deps). BASE_IMAGE replaces the base where Docker Hub cannot be reached
# (tools/docker_base.sh makes a stand-in from Debian's packages; build.sh --base local uses it).
#
# Two ways to get the wheels, both checked against the lock's hashes:
#   online     pip downloads them inside the build (plain `docker build .`);
#   wheelhouse build.sh downloads them with the host's pip into build/wheelhouse/$TORCH_VARIANT/ (pip download
#              --require-hashes), and the build installs them with --no-index: no network and no certificates inside.
# The closure is installed into a venv in a first stage, trimmed, and copied alone into the final image, so the
# wheelhouse never becomes one of its layers. Trimmed, as nothing the job runs loads them: triton (torch.compile's
# GPU compiler, 0.6 GB; the engine traces and freezes with TorchScript instead), pip, the C++ headers, static
# libraries and nvshmem's device bitcode (for compiling code against torch and CUDA, not for running it). nccl and
# nvshmem stay: libtorch_cuda.so links them (readelf -d), so torch cannot import without them.
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:6d2502238109c929569ae99355e28890c438cb11bc88ef02cd189c173b3db07c

FROM --platform=linux/amd64 ${BASE_IMAGE} AS install
ARG TORCH_VARIANT=cu128
# locks/ always; the variant's wheelhouse when build.sh made one (a glob that matches nothing copies nothing).
COPY locks/ build/wheelhouse/${TORCH_VARIANT}* /opt/install/
RUN cd /opt/install && test -f "$TORCH_VARIANT.txt" || { echo "locks/$TORCH_VARIANT.txt is missing: run" \
        "tools/lock.sh $TORCH_VARIANT and commit it" >&2; exit 1; } \
    && python -m venv /opt/venv \
    && if ls ./*.whl >/dev/null 2>&1; then SOURCE="--no-index --find-links /opt/install"; else SOURCE=""; fi \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes --no-deps $SOURCE \
        -r "$TORCH_VARIANT.txt" \
    && /opt/venv/bin/pip uninstall --yes --disable-pip-version-check triton pip \
    && SITE=$(/opt/venv/bin/python -c "import sysconfig; print(sysconfig.get_path('purelib'))") \
    && rm -rf "$SITE/torch/include" "$SITE"/nvidia/*/include \
    && find "$SITE" \( -name '*.a' -o -name '*.bc' \) -delete

FROM --platform=linux/amd64 ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    PATH=/opt/venv/bin:$PATH \
    TORCH_HOME=/tmp/torch \
    MPLCONFIGDIR=/tmp/matplotlib

# The platform runs the container as an unprivileged user.
RUN groupadd --system user && useradd --system --create-home --no-log-init --gid user user \
    && mkdir -p /opt/app /input /output && chown user:user /opt/app /output

COPY --from=install /opt/venv /opt/venv
WORKDIR /opt/app
COPY --chown=user:user amf/*.py /opt/app/amf/
COPY --chown=user:user amf/inference /opt/app/amf/inference
COPY --chown=user:user weights /opt/app/weights
COPY --chown=user:user process.py /opt/app/
COPY --chown=user:user test/input /opt/app/test/input

# Warm the frozen-graph cache once at build time (amf.inference.loading.load_engine): every job then starts without
# importing timm or tracing (docs/benchmark.md, "Cold start: what it is made of, and the graph cache"). Keyed by
# the members' sha256; it lives in the image, not in /tmp, which the platform gives empty.
ENV AMF_GRAPH_CACHE=/opt/app/graph-cache
USER user
# torch leaves a torchinductor_user folder in /tmp: the image's /tmp stays empty, as the platform's is.
RUN python -m compileall -q amf process.py && python process.py --input test/input --output /tmp/warm \
    && find /tmp -mindepth 1 -delete

# What the image was built from, for tools/verify_docker.sh (the OCI annotation for a base).
ARG BASE_IMAGE
ARG TORCH_VARIANT=cu128
LABEL org.opencontainers.image.base.name="${BASE_IMAGE}" amf.torch-variant="${TORCH_VARIANT}"
ENTRYPOINT ["python", "process.py"]
