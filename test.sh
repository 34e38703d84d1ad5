#!/usr/bin/env bash
# Run the algorithm on test/input and compare with test/expected_output.json: classes exactly, confidences within
# amf.reproducibility.TOLERANCE, the spread measured over CPUs, oneDNN ISAs and thread counts (docs/audit.md, "Exact
# where, and within what"); `amf audit` also holds a run on the recording machine to the same bits. On a GPU the
# engine runs fp32 with TF32 off (amf.inference.engine), so it differs from the CPU by float rounding; bf16 autocast
# would not hold the tolerance, and is off. tools/gpu_check.sh measures the GPU's difference on a real GPU.
#
#   ./test.sh [--local] [--no-build] [BUILD.SH ARGUMENTS...]   e.g. ./test.sh, ./test.sh cu130, ./test.sh --online
# With a docker engine that answers (tools/docker_engine.sh starts one): builds the image with ./build.sh (its
# arguments pass through; --no-build runs the image already tagged) and runs it as the platform does: --network none,
# a read-only root with a tmpfs /tmp, a read-only /input, the image's non-root user, the GPU when there is one
# (tools/verify_docker.sh prints what the image is). --local, or no engine: runs process.py from .venv under the same
# conditions as far as this machine allows: a read-only copy of the input, no network (unshare -n),
# HF_HUB_OFFLINE=1, an unwritable HOME, and an unprivileged user when the interpreter is reachable by one.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="${IMAGE:-midog25-t2-amf}"
LOCAL=0
BUILD=1
BUILD_ARGS=()
VARIANT="${TORCH_VARIANT:-cu128}"
for arg in "$@"; do
    case "$arg" in
        --local) LOCAL=1 ;;
        --no-build) BUILD=0 ;;
        cu128|cu130|cpu) VARIANT="$arg"; BUILD_ARGS+=("$arg") ;;
        *) BUILD_ARGS+=("$arg") ;;
    esac
done
WORK="$(mktemp -d)"
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
OUTPUT="$WORK/output"
mkdir -p "$OUTPUT"
chmod 777 "$OUTPUT"

if [[ $LOCAL == 0 ]] && command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    [[ $BUILD == 0 ]] || "$SCRIPT_DIR/build.sh" "${BUILD_ARGS[@]}"
    GPU=()
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then GPU=(--gpus all); fi
    docker run --rm "${GPU[@]}" --network none --read-only --tmpfs /tmp --shm-size 1g \
        --volume "$SCRIPT_DIR/test/input:/input:ro" --volume "$OUTPUT:/output" \
        "$IMAGE:$VARIANT"
else
    echo "test.sh: running process.py from .venv under container-like conditions (no docker image)"
    PY="$SCRIPT_DIR/.venv/bin/python"
    [ -x "$PY" ] || { echo "test.sh: $PY missing: run 'make venv' first" >&2; exit 1; }
    cp -r "$SCRIPT_DIR/test/input" "$WORK/input"
    chmod -R a-w "$WORK/input"
    ENVIRONMENT=(env -i PATH=/usr/bin:/bin HOME=/nonexistent HF_HUB_OFFLINE=1 TMPDIR=/tmp
                 MPLCONFIGDIR=/tmp/amf-mpl PYTHONDONTWRITEBYTECODE=1)
    USER_SWITCH=()
    NETWORK=()
    if [ "$(id -u)" = 0 ]; then
        chmod 755 "$WORK"
        if (cd "$SCRIPT_DIR" && setpriv --reuid=65534 --regid=65534 --clear-groups "$PY" -c "import amf") 2>/dev/null; then
            USER_SWITCH=(setpriv --reuid=65534 --regid=65534 --clear-groups)
        else
            echo "test.sh: the interpreter is not reachable by an unprivileged user here: running as root"
        fi
    fi
    if unshare -n true 2>/dev/null; then NETWORK=(unshare -n); else echo "test.sh: unshare -n unavailable: network left on"; fi
    # Order matters: the network namespace needs privileges, so the user switch comes last, right before python.
    RUN=("${NETWORK[@]}" "${ENVIRONMENT[@]}" "${USER_SWITCH[@]}")
    (cd "$SCRIPT_DIR" && "${RUN[@]}" "$PY" process.py --input "$WORK/input" --output "$OUTPUT")
fi

python3 "$SCRIPT_DIR/tools/compare_output.py" "$OUTPUT/multiple-mitotic-figure-classification.json"
