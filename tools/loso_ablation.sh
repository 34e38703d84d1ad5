#!/usr/bin/env bash
# Leave-one-scanner-out ablation on AMi-Br (docs/results.md): one model per held-out scanner (fold 0 of the
# 5-fold over the two training scanners), 12 epochs unless said, every row scored on the scanner it never saw.
# Two streams of one thread each keep both cores busy (~60 min on 2 idle cores).
#   tools/loso_ablation.sh [RUNS_DIR]      (default runs/ablation; resumable: rerun to finish)
# then: python -m amf crossval RUNS_DIR/* --output docs/results/ablation
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/ablation}
LABELS=${LABELS:-../shared/data/ami-br-midog21/labels.csv}
PY=${PYTHON:-.venv/bin/python}
row() {  # NAME [train options]...
  local name=$1; shift
  local resume=(); [[ -f "$RUNS/$name/config.json" ]] && resume=(--resume)
  "$PY" -m amf train --config configs/cpu.toml --labels "$LABELS" --output "$RUNS/$name" "${resume[@]}" \
    --lodo-only --fold-limit 1 --epochs 12 --threads 1 --no-progress "$@" > "$RUNS/$name.log" 2>&1
}
mkdir -p "$RUNS"
( row b0-stain-weak && row b0-stain-strong --set stain_sigma=0.25 --set stain_delta=0.1 \
  && row b0-stain-weak-24ep --epochs 24 ) &
( row b0-stain-off --set stain_sigma=0.0 --set stain_delta=0.0 && row b1-stain-weak --arch efficientvit_b1 ) &
wait
