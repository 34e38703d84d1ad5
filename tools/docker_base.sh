#!/usr/bin/env bash
# A local stand-in for the Dockerfile's base image, for a machine that cannot pull python:3.11-slim-bookworm (no Docker
# Hub): Debian bookworm's own Python 3.11 from Debian's package mirror (debootstrap --variant=minbase), loaded with
# `docker import` as $BASE_TAG (default amf-base:bookworm-python3.11). Needs root and debootstrap (apt-get installs it).
#   tools/docker_base.sh [--force]   (--force: make it again even if the tag exists)
# How it differs from the real base: Debian's python3.11 package (3.11.2, /usr/bin/python3, `python` from
# python-is-python3, venv from python3-venv) instead of the Docker library's own build (the newest 3.11, in
# /usr/local/bin); not pinned by digest (the packages are what bookworm's mirror holds that day). The image's
# Python closure lives in a venv (/opt/venv) on either base, so the same Dockerfile builds on both.
set -euo pipefail
BASE_TAG="${BASE_TAG:-amf-base:bookworm-python3.11}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if [[ ${1:-} != --force ]] && docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
  echo "docker_base: $BASE_TAG is there"; exit 0
fi
[[ $(id -u) == 0 ]] || { echo "docker_base: debootstrap needs root" >&2; exit 2; }
if ! command -v debootstrap >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
fi
ROOTFS=$(mktemp -d)
trap 'rm -rf "$ROOTFS"' EXIT
echo "docker_base: debootstrap bookworm from $MIRROR (about 300 MB, a minute or two)"
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates bookworm "$ROOTFS" \
  "$MIRROR" >"$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log" >&2; exit 1; }
rm -f "$ROOTFS.log"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' --message "tools/docker_base.sh: Debian bookworm minbase with python3.11" \
  - "$BASE_TAG" >/dev/null
echo "docker_base: made $BASE_TAG ($(docker run --rm "$BASE_TAG" python --version))"
