#!/usr/bin/env bash
# Save the built image as a dated .tar.gz, the file Grand Challenge takes as an algorithm upload.
#   ./export.sh [BUILD.SH ARGUMENTS...]   builds first with ./build.sh (default variant cu128); prints the file's size
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="${IMAGE:-midog25-t2-amf}"
VARIANT="${TORCH_VARIANT:-cu128}"
for arg in "$@"; do case "$arg" in cu128|cu130|cpu) VARIANT="$arg" ;; esac; done
"$SCRIPT_DIR/build.sh" "$@"
OUT="$SCRIPT_DIR/${IMAGE}-${VARIANT}_$(date +%Y-%m-%d).tar.gz"
GZIP=gzip
command -v pigz >/dev/null && GZIP=pigz  # the same gzip format, on every core
docker save "$IMAGE:$VARIANT" | "$GZIP" -c > "$OUT"
echo "wrote $OUT ($(du -m "$OUT" | cut -f1) MiB)"
