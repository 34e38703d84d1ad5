#!/usr/bin/env bash
# Save the built image as a dated .tar.gz, the file Grand Challenge takes as an algorithm upload.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="${IMAGE:-midog25-t2-amf}"
"$SCRIPT_DIR/build.sh"
OUT="$SCRIPT_DIR/${IMAGE}_$(date +%Y-%m-%d).tar.gz"
docker save "$IMAGE" | gzip -c > "$OUT"
echo "wrote $OUT"
