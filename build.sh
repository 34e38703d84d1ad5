#!/usr/bin/env bash
# Build the algorithm container image (linux/amd64), tagged $IMAGE and $IMAGE:VARIANT (default midog25-t2-amf).
#   ./build.sh [--online] [--base official|local|auto] [cu128|cu130|cpu]
# VARIANT: the torch build (default cu128: CUDA 12.8, for the platform's T4 hosts; the Dockerfile says which to pick
#   when). Its lock, locks/VARIANT.txt, is installed with pip --require-hashes.
# Wheels: by default the host's pip downloads the lock's wheels into build/wheelhouse/VARIANT/ (pip download
#   --require-hashes, kept for the next build) and the build installs them with --no-index, so it needs no network
#   and no certificates inside. --online lets pip download them inside the build instead.
# --base: official is the Dockerfile's digest-pinned python:3.11-slim-bookworm (pulled if it is not here); local is
#   the stand-in tools/docker_base.sh makes from Debian's packages; auto (the default) takes official where it is
#   here or can be pulled, else local, and says so.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="${IMAGE:-midog25-t2-amf}"
ONLINE=0
BASE=auto
VARIANT="${TORCH_VARIANT:-cu128}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --online) ONLINE=1 ;;
    --base) BASE="$2"; shift ;;
    cu128|cu130|cpu) VARIANT="$1" ;;
    *) echo "build.sh: unknown argument '$1' (see the comment at the top)" >&2; exit 2 ;;
  esac
  shift
done
LOCK="$SCRIPT_DIR/locks/$VARIANT.txt"
[[ -f $LOCK ]] || { echo "build.sh: $LOCK is missing: run tools/lock.sh $VARIANT and commit it" >&2; exit 1; }

OFFICIAL=$(sed -n 's/^ARG BASE_IMAGE=//p' "$SCRIPT_DIR/Dockerfile")
LOCAL="${BASE_TAG:-amf-base:bookworm-python3.11}"
case "$BASE" in
  official) BASE_IMAGE=$OFFICIAL ;;
  local) BASE_TAG="$LOCAL" "$SCRIPT_DIR/tools/docker_base.sh"; BASE_IMAGE=$LOCAL ;;
  auto)
    if docker image inspect "$OFFICIAL" >/dev/null 2>&1 || docker pull --quiet "$OFFICIAL" >/dev/null 2>&1; then
      BASE_IMAGE=$OFFICIAL
    else
      echo "build.sh: cannot pull ${OFFICIAL%@*}: building on the local stand-in $LOCAL (tools/docker_base.sh)"
      BASE_TAG="$LOCAL" "$SCRIPT_DIR/tools/docker_base.sh"
      BASE_IMAGE=$LOCAL
    fi ;;
  *) echo "build.sh: --base official, local or auto, not '$BASE'" >&2; exit 2 ;;
esac

WHEELHOUSE="$SCRIPT_DIR/build/wheelhouse/$VARIANT"
if [[ $ONLINE == 1 ]]; then
  rm -rf "$WHEELHOUSE"  # the build context must not carry it, or the build installs from it
else
  echo "build.sh: the lock's wheels into build/wheelhouse/$VARIANT (the host's pip, hashes checked)"
  mkdir -p "$WHEELHOUSE"
  # Every glibc tag up to 2.28, the lock's platform (tools/lock.sh), for a host of any kind (older pips do not
  # widen a --platform to the older tags it includes).
  python3 -m pip download --quiet --disable-pip-version-check --require-hashes --no-deps --only-binary=:all: \
    $(printf -- '--platform manylinux_2_%s_x86_64 ' {5..28}) --platform manylinux2014_x86_64 \
    --platform manylinux2010_x86_64 --platform manylinux1_x86_64 \
    --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
    --requirement "$LOCK" --dest "$WHEELHOUSE"
  # Only the lock's own files: a wheel left from an older lock would be sent to the build for nothing.
  python3 - "$LOCK" "$WHEELHOUSE" <<'PY'
import re, sys
from pathlib import Path
lock, house = Path(sys.argv[1]).read_text(), Path(sys.argv[2])
pins = {re.sub(r"[-_.]+", "_", m[1]).lower() + "-" + m[2] for m in re.finditer(r"^([\w.\-]+)==(\S+)", lock, re.M)}
for wheel in house.glob("*.whl"):
    name, version = wheel.name.split("-")[:2]
    if f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}" not in pins:
        wheel.unlink()
PY
fi
echo "build.sh: docker build $IMAGE:$VARIANT on ${BASE_IMAGE%@*}"
docker build --platform=linux/amd64 --build-arg "TORCH_VARIANT=$VARIANT" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  --tag "$IMAGE" --tag "$IMAGE:$VARIANT" "$SCRIPT_DIR"
