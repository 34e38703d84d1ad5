#!/usr/bin/env bash
# The image's whole Python closure, pinned with hashes, for one torch variant: locks/VARIANT.txt, generated from
# requirements.txt by uv (pip compile --generate-hashes), for Linux x86-64 and Python 3.11 (the image's).
#   tools/lock.sh [cu126|cu130|cpu]   (default cu126, the Dockerfile's default)
# cu130 is PyPI's own torch wheel; cu126 and cpu come from the PyTorch index (download.pytorch.org), which must be
# reachable from where this runs. Commit the lock it writes; the Dockerfile installs it with --require-hashes, and
# tests/test_locks.py checks that every lock pins requirements.txt's versions.
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT="${1:-cu126}"
UV_VERSION=0.13.9
case "$VARIANT" in
  cu130) INDEX=(--index-url https://pypi.org/simple) ;;
  cu126|cpu) INDEX=(--index-url https://pypi.org/simple --extra-index-url "https://download.pytorch.org/whl/$VARIANT"
                    --index-strategy first-index --emit-index-url) ;;
  *) echo "tools/lock.sh: unknown variant '$VARIANT' (cu126, cu130 or cpu)" >&2; exit 2 ;;
esac
UV=$(command -v uv || true)
if [[ -z $UV || $("$UV" --version | cut -d' ' -f2) != "$UV_VERSION" ]]; then
  TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
  python3 -m pip install --quiet --isolated --disable-pip-version-check --target "$TMP" "uv==$UV_VERSION"
  UV="$TMP/bin/uv"
fi
mkdir -p locks
"$UV" pip compile requirements.txt --generate-hashes --no-config --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 "${INDEX[@]}" --custom-compile-command "tools/lock.sh $VARIANT" \
  -o "locks/$VARIANT.txt"
echo "wrote locks/$VARIANT.txt"
