#!/usr/bin/env bash
# The image's whole Python closure, pinned with hashes, for one torch variant: locks/VARIANT.txt, generated from
# requirements.txt by uv (pip compile --generate-hashes), for Linux x86-64 and Python 3.11 (the image's).
#   tools/lock.sh [cu128|cu130|cpu]   (default cu128, the Dockerfile's default)
# The variants (the Dockerfile's comment says which to pick when):
#   cu128  requirements.txt as it is: PyPI's torch 2.10.0, a CUDA 12.8 build. PyPI alone is needed.
#   cu130  requirements.txt with locks/overrides/cu130.txt's torch (2.14.1, PyPI's CUDA 13.0 build). PyPI alone.
#   cpu    requirements.txt's torch as the PyTorch index's CPU-only build: download.pytorch.org must be reachable.
# Commit the lock it writes; the Dockerfile installs it with --require-hashes, and tests/test_locks.py checks that the
# default lock pins requirements.txt's versions and that every other lock pins them but for its own torch.
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT="${1:-cu128}"
UV_VERSION=0.13.9
OVERRIDE=()
case "$VARIANT" in
  cu128) INDEX=(--index-url https://pypi.org/simple) ;;
  cu130) INDEX=(--index-url https://pypi.org/simple) OVERRIDE=(--override locks/overrides/cu130.txt) ;;
  cpu) INDEX=(--index-url https://pypi.org/simple --extra-index-url "https://download.pytorch.org/whl/cpu"
              --index-strategy first-index --emit-index-url) ;;
  *) echo "tools/lock.sh: unknown variant '$VARIANT' (cu128, cu130 or cpu)" >&2; exit 2 ;;
esac
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
UV=$(command -v uv || true)
if [[ -z $UV || $("$UV" --version | cut -d' ' -f2) != "$UV_VERSION" ]]; then
  python3 -m pip install --quiet --isolated --disable-pip-version-check --target "$TMP" "uv==$UV_VERSION"
  UV="$TMP/bin/uv"
fi
mkdir -p locks
"$UV" pip compile requirements.txt --generate-hashes --no-config --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 "${INDEX[@]}" "${OVERRIDE[@]}" \
  --custom-compile-command "tools/lock.sh $VARIANT" \
  -o "locks/$VARIANT.txt"
echo "wrote locks/$VARIANT.txt"
