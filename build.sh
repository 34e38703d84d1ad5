#!/usr/bin/env bash
# Build the algorithm container image (linux/amd64).
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="${IMAGE:-midog25-t2-amf}"
docker build --platform=linux/amd64 --tag "$IMAGE" "$SCRIPT_DIR"
