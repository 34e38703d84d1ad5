#!/usr/bin/env bash
# Run the algorithm on test/input and compare with test/expected_output.json: classes exactly, confidences within
# amf.reproducibility.TOLERANCE, the spread measured over CPUs, oneDNN ISAs and thread counts (docs/audit.md, "Exact
# where, and within what"); `amf audit` also holds a run on the recording machine to the same bits. On a GPU the
# engine runs fp32 with TF32 off (amf.inference.engine), so it differs from the CPU by float rounding; bf16 autocast
# would not hold the tolerance, and is off. tools/gpu_check.sh measures the GPU's difference on a real GPU.
#
#   ./test.sh [cu126|cu130|cpu]   the image's torch variant, with docker (default cu126)
# With a working docker engine: builds the image and runs it as the platform does: --network none, a read-only
# root with a tmpfs /tmp, read-only /input, the GPU when there is one (tools/verify_docker.sh does it for every variant
# and prints what the image is). Without one: runs process.py from .venv under the same
# conditions as far as this machine allows: a read-only copy of the input, no network (unshare -n),
# HF_HUB_OFFLINE=1, an unwritable HOME, and an unprivileged user when the interpreter is reachable by one.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="${IMAGE:-midog25-t2-amf}"
WORK="$(mktemp -d)"
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
OUTPUT="$WORK/output"
mkdir -p "$OUTPUT"
chmod 777 "$OUTPUT"

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    VARIANT="${1:-cu126}"
    "$SCRIPT_DIR/build.sh" "$VARIANT"
    GPU=()
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then GPU=(--gpus all); fi
    docker run --rm "${GPU[@]}" --network none --read-only --tmpfs /tmp --shm-size 1g \
        --volume "$SCRIPT_DIR/test/input:/input:ro" --volume "$OUTPUT:/output" \
        "$IMAGE:$VARIANT"
else
    echo "test.sh: no docker engine here; running process.py locally under container-like conditions"
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
