#!/usr/bin/env bash
# For a machine with a docker engine (tools/docker_engine.sh starts one): build each torch variant, print what the
# image is (user, entrypoint, working directory, size, base, torch and the GPU architectures it carries), run it the
# way the platform does (--network none, a read-only root with a tmpfs /tmp, a read-only /input, its unprivileged
# user, the GPU when there is one), time the run, and compare its JSON with test/expected_output.json within
# amf.reproducibility.TOLERANCE (tools/compare_output.py).
#   tools/verify_docker.sh [--no-build] [VARIANT ...]   (default: cu128; cu130 needs a driver >= 580 to use the GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v docker >/dev/null && docker info >/dev/null 2>&1 ||
  { echo "verify_docker: no docker engine answers (tools/docker_engine.sh starts one)" >&2; exit 2; }
IMAGE="${IMAGE:-midog25-t2-amf}"
BUILD=1
VARIANTS=()
for arg in "$@"; do if [[ $arg == --no-build ]]; then BUILD=0; else VARIANTS+=("$arg"); fi; done
[[ ${#VARIANTS[@]} -gt 0 ]] || VARIANTS=(cu128)
GPU=()
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  GPU=(--gpus all)
  echo "verify_docker: GPU $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
fi
failed=0
for variant in "${VARIANTS[@]}"; do
  echo "=== $variant"
  [[ $BUILD == 0 ]] || ./build.sh "$variant"
  docker image inspect "$IMAGE:$variant" --format \
    'user={{.Config.User}} entrypoint={{json .Config.Entrypoint}} workdir={{.Config.WorkingDir}} size={{.Size}} bytes'
  docker image inspect "$IMAGE:$variant" --format \
    'base: {{index .Config.Labels "org.opencontainers.image.base.name"}}'
  docker run --rm --network none --entrypoint python "$IMAGE:$variant" -c \
    "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'architectures',
          torch._C._cuda_getArchFlags() if torch.version.cuda else 'none')"
  out=$(mktemp -d); chmod 777 "$out"
  start=$(date +%s.%N)
  if docker run --rm "${GPU[@]}" --network none --read-only --tmpfs /tmp --shm-size 1g \
      --volume "$PWD/test/input:/input:ro" --volume "$out:/output" "$IMAGE:$variant" 2>"$out.stderr"; then
    echo "ran in $(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$start" \
      "$(date +%s.%N)") s (docker run to its exit); stderr: $(wc -l <"$out.stderr") line(s)"
    cat "$out.stderr"
    python3 tools/compare_output.py "$out/multiple-mitotic-figure-classification.json" \
      --label "verify_docker $variant" || failed=1
  else
    echo "verify_docker $variant: the container failed:"; cat "$out.stderr"; failed=1
  fi
  rm -rf "$out" "$out.stderr"
done
exit $failed
