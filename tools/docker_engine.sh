#!/usr/bin/env bash
# Make sure a docker engine answers: if none does, install Debian's docker.io (apt-get) and start dockerd in the
# background with the first storage driver it starts with here (overlay2, then fuse-overlayfs, then vfs,
# which copies the whole image for every container and is slow). Idempotent: an engine that answers is left alone.
#   tools/docker_engine.sh          exit 0: an engine answers; 3: none can be started here (says why)
# The engine's log is /var/log/amf-dockerd.log. `make test-image` and .ci/run call this first.
set -euo pipefail
answers() { docker info >/dev/null 2>&1; }
if command -v docker >/dev/null && answers; then
  echo "docker_engine: an engine answers ($(docker info --format '{{.ServerVersion}}, storage {{.Driver}}'))"; exit 0
fi
cannot() { echo "docker_engine: cannot start an engine here: $*" >&2; exit 3; }
[[ $(id -u) == 0 ]] || cannot "not root (start dockerd yourself, or join the docker group)"
if ! command -v dockerd >/dev/null; then
  command -v apt-get >/dev/null || cannot "no dockerd and no apt-get to install Debian's docker.io"
  echo "docker_engine: installing Debian's docker.io"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null; } ||
    cannot "apt-get install docker.io failed"
fi
LOG=/var/log/amf-dockerd.log
for driver in overlay2 fuse-overlayfs vfs; do
  if [[ $driver == fuse-overlayfs ]] && ! command -v fuse-overlayfs >/dev/null; then continue; fi
  pkill -x dockerd 2>/dev/null && sleep 2 || true
  echo "docker_engine: starting dockerd --storage-driver=$driver (log $LOG)"
  setsid nohup dockerd --storage-driver="$driver" >>"$LOG" 2>&1 </dev/null &
  pid=$!
  # dockerd exits at once when the kernel or the file system cannot carry the driver.
  for _ in $(seq 60); do answers && break; kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  if answers; then
    echo "docker_engine: an engine answers ($(docker info --format '{{.ServerVersion}}, storage {{.Driver}}'))"; exit 0
  fi
done
cannot "dockerd did not start with any storage driver (see $LOG)"
