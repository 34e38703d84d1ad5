# MIDOG 2025 Track 2 algorithm container: python process.py reads /input, writes /output.
FROM --platform=linux/amd64 pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TORCH_HOME=/tmp/torch \
    MPLCONFIGDIR=/tmp/matplotlib

# The platform runs the container as an unprivileged user.
RUN groupadd --system user && useradd --system --create-home --no-log-init --gid user user \
    && mkdir -p /opt/app /input /output && chown user:user /opt/app /output

WORKDIR /opt/app

# The exact versions the tests ran with (torch is replaced by the pinned one if the base differs).
COPY --chown=user:user requirements.txt /opt/app/
RUN python -m pip install --no-cache-dir --disable-pip-version-check -r requirements.txt

COPY --chown=user:user amf /opt/app/amf
COPY --chown=user:user weights /opt/app/weights
COPY --chown=user:user process.py /opt/app/

USER user
ENTRYPOINT ["python", "process.py"]
