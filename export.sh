#!/usr/bin/env bash
# Save the built image as a dated .tar.gz, the file Grand Challenge takes as an algorithm upload.
#   ./export.sh [cu126|cu130|cpu]   the torch variant, passed to build.sh (default cu126)
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="${IMAGE:-midog25-t2-amf}"
VARIANT="${1:-${TORCH_VARIANT:-cu126}}"
"$SCRIPT_DIR/build.sh" "$VARIANT"
OUT="$SCRIPT_DIR/${IMAGE}-${VARIANT}_$(date +%Y-%m-%d).tar.gz"
docker save "$IMAGE:$VARIANT" | gzip -c > "$OUT"
echo "wrote $OUT"
