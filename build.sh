#!/usr/bin/env bash
# Build the algorithm container image (linux/amd64).
#   ./build.sh [cu126|cu130|cpu]   the torch variant (default cu126: CUDA 12.6, for the platform's T4 hosts; the
#                                  Dockerfile says which to pick when). The image is tagged $IMAGE, default
#                                  midog25-t2-amf (and midog25-t2-amf:VARIANT).
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="${IMAGE:-midog25-t2-amf}"
VARIANT="${1:-${TORCH_VARIANT:-cu126}}"
docker build --platform=linux/amd64 --build-arg "TORCH_VARIANT=$VARIANT" --tag "$IMAGE" --tag "$IMAGE:$VARIANT" \
    "$SCRIPT_DIR"
