#!/usr/bin/env bash
# Leave-one-domain-out ablation over the four AMi-Br domains (three MIDOG21 scanners and TUPAC16; issue 10,
# docs/results.md): one model per held-out domain (fold 0 of the 5-fold over the other three domains), every row
# scored on the domain it never saw. Two streams of one thread each keep both cores busy.
#   tools/lodo_ablation.sh [a|b|all|seeds|student-weight|two-students|ensemble|ensemble:ROW|arch-mix|arch-mix:FOLD]
#                          [RUNS_DIR]
#   (default: all, runs/lodo)
# `seeds` trains the shipped recipe's row and its student again with seed 1 (a new split, initialisation, sampling
# and augmentation), so a difference between rows can be set against the spread from the seed alone.
# `student-weight` trains the student with distill_weight 0.8 instead of 0.5, as two --fold jobs (resumable).
# `two-students` trains the shipped student's recipe with two members per held-out domain (folds 0 and 1 of its
# 5-fold split, --fold-limit 2): what `amf export` ships from a full-data run with --fold-limit 2 (issue 35), as two
# jobs of two domains each (resumable).
# `ensemble:ROW` grows the finished one-model row ROW into ROW-ens5, all five members per held-out domain (20
# models): a copy of ROW (its fold 0 is the same fold, same bytes) plus folds 1-4, trained as two jobs.
# `ensemble` is `ensemble:lite0-128` (the plain recipe's five, shipped before), training lite0-128 first if it is missing.
# `arch-mix` trains the shipped recipe on Lite1 and Lite2, one stream each (issue 35's teacher of three architectures);
# `arch-mix:lodo/TUPAC16/fold0` only that held-out domain's model of each, the rest resumable later.
# then: python -m amf crossval RUNS_DIR/* --output docs/results/lodo4
# Rows are listed in the order they run; a finished row is skipped, an unfinished one resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
STREAM=${1:-all}
RUNS=${2:-runs/lodo}
PY=${PYTHON:-.venv/bin/python}
DATA=../shared/data
LABELS=(--labels "$DATA/ami-br-midog21/labels.csv" --labels "$DATA/ami-br-tupac16/labels.csv")
row() {  # NAME CONFIG [train options]...
  local name=$1 config=$2; shift 2
  [[ -f "$RUNS/$name/summary.json" ]] && return 0
  local resume=(); [[ -f "$RUNS/$name/config.json" ]] && resume=(--resume)
  echo "$(date -u +%FT%TZ) start $name" >&2
  "$PY" -m amf train --config "$config" "${LABELS[@]}" --output "$RUNS/$name" "${resume[@]}" \
    --lodo-only --fold-limit 1 --threads 1 --no-progress "$@" >> "$RUNS/$name.log" 2>&1
  echo "$(date -u +%FT%TZ) done $name" >&2
}
lite() {  # N: the pretrained EfficientNet-Lite N, arch and weights together
  echo --arch "efficientnet_lite$1" --set "init_weights='imagenet:efficientnet_lite$1'"
}
stream_a() {
  row lite0-128 configs/lite0.toml                      # the recipe (configs/lite0.toml)
  row b0-scratch-128 configs/b0-scratch.toml               # the baseline: today's scratch efficientvit_b0, 12 epochs
  row lite0-128-mixup configs/lite0.toml --set mixup_alpha=0.4
  row lite2-128 configs/lite0.toml $(lite 2)
  row lite0-128-hed-strong-ema configs/lite0.toml --set stain_sigma=0.4 --set stain_delta=0.15 --set ema_decay=0.999
}
stream_b() {
  row lite1-128 configs/lite0.toml $(lite 1)
  row lite0-128-hed-strong configs/lite0.toml --set stain_sigma=0.4 --set stain_delta=0.15  # domains differ by 2x in H
  row lite0-128-hed-strong-crop80 configs/lite0-crop80.toml  # hed-strong plus a zoom: the shipped recipe
  row lite0-224 configs/lite0.toml --input-size 224
  # a student of the shipped row (issue 24): its recipe, learning half from the labels and half from the scores of
  # its own held-out domain's teachers (their out-of-fold scores with 8 views: amf.training.distill)
  row lite0-128-hed-strong-crop80-distill configs/lite0-crop80.toml --set distill_weight=0.5 \
    --set "teacher_scores='docs/results/lodo4/oof_lite0-128-hed-strong-crop80-ens5_tta.csv'"
}
seeds() {  # the two rows of issue 24 again with seed 1, one stream each
  row lite0-128-hed-strong-crop80-seed1 configs/lite0-crop80.toml --set seed=1 &
  row lite0-128-hed-strong-crop80-distill-seed1 configs/lite0-crop80.toml --set distill_weight=0.5 --set seed=1 \
    --set "teacher_scores='docs/results/lodo4/oof_lite0-128-hed-strong-crop80-ens5_tta.csv'" &
  wait
}
two_jobs() {  # NAME TRAIN_OPTION...: NAME's folds 0 and 1 of every held-out domain, as two jobs of two domains each
  local name=$1; shift
  [[ -f "$RUNS/$name/summary.json" ]] && return 0
  local resume=(); [[ -f "$RUNS/$name/config.json" ]] && resume=(--resume)
  local args=(--config configs/lite0-crop80.toml "${LABELS[@]}" --output "$RUNS/$name" "${resume[@]}" --lodo-only
              --threads 1 --no-progress "$@")
  local A=lodo/Aperio_CS2 S=lodo/Hamamatsu_S360 X=lodo/Hamamatsu_XR T=lodo/TUPAC16
  echo "$(date -u +%FT%TZ) start $name" >&2
  "$PY" -m amf train "${args[@]}" --fold $A/fold0 --fold $A/fold1 --fold $S/fold0 --fold $S/fold1 \
    >> "$RUNS/$name.a.log" 2>&1 &
  until [[ -f "$RUNS/$name/config.json" ]]; do sleep 1; done  # the first job writes the run's config
  "$PY" -m amf train "${args[@]}" --fold $X/fold0 --fold $X/fold1 --fold $T/fold0 --fold $T/fold1 \
    >> "$RUNS/$name.b.log" 2>&1 &
  wait
  echo "$(date -u +%FT%TZ) done $name" >&2
}
student_weight() {  # the student learning more from its teachers (distill_weight 0.8), two jobs of two domains each
  local name=lite0-128-hed-strong-crop80-distill-w08
  [[ -f "$RUNS/$name/summary.json" ]] && return 0
  local resume=(); [[ -f "$RUNS/$name/config.json" ]] && resume=(--resume)
  local args=(--config configs/lite0-crop80.toml "${LABELS[@]}" --output "$RUNS/$name" "${resume[@]}" --lodo-only
              --fold-limit 1 --threads 1 --no-progress --set distill_weight=0.8
              --set "teacher_scores='docs/results/lodo4/oof_lite0-128-hed-strong-crop80-ens5_tta.csv'")
  echo "$(date -u +%FT%TZ) start $name" >&2
  "$PY" -m amf train "${args[@]}" --fold lodo/Aperio_CS2/fold0 --fold lodo/Hamamatsu_S360/fold0 \
    >> "$RUNS/$name.a.log" 2>&1 &
  until [[ -f "$RUNS/$name/config.json" ]]; do sleep 1; done  # the first job writes the run's config
  "$PY" -m amf train "${args[@]}" --fold lodo/Hamamatsu_XR/fold0 --fold lodo/TUPAC16/fold0 >> "$RUNS/$name.b.log" 2>&1 &
  wait
  echo "$(date -u +%FT%TZ) done $name" >&2
}
arch_mix() {  # FOLD...: the shipped recipe on Lite1 and Lite2 (issue 35: a teacher of three architectures), one
  # stream each; with FOLD arguments (e.g. lodo/TUPAC16/fold0) only those folds, resumable: the rest later
  local folds=(); for f in "$@"; do folds+=(--fold "$f"); done
  local n
  for n in 1 2; do
    local name=lite$n-128-hed-strong-crop80
    [[ -f "$RUNS/$name/summary.json" ]] && continue
    local resume=(); [[ -f "$RUNS/$name/config.json" ]] && resume=(--resume)
    echo "$(date -u +%FT%TZ) start $name ${*}" >&2
    "$PY" -m amf train --config configs/lite0-crop80.toml $(lite "$n") "${LABELS[@]}" --output "$RUNS/$name" \
      "${resume[@]}" --lodo-only --fold-limit 1 --threads 1 --no-progress "${folds[@]}" >> "$RUNS/$name.log" 2>&1 &
  done
  wait
  echo "$(date -u +%FT%TZ) done arch-mix ${*}" >&2
}
folds() {  # NAME FOLD...: train these folds of the five-member LODO run NAME (joins the shared run folder)
  local name=$1; shift
  local args=(); for f in "$@"; do args+=(--fold "$f"); done
  echo "$(date -u +%FT%TZ) start $name ${*}" >&2
  "$PY" -m amf train "${LABELS[@]}" --output "$RUNS/$name" --resume --fold-limit 0 --threads 1 --no-progress \
    "${args[@]}" >> "$RUNS/$name.log" 2>&1
  echo "$(date -u +%FT%TZ) done $name ${*}" >&2
}
ensemble() {  # ROW: the five-member LODO run ROW-ens5 of a one-model row (its fold 0 is the same fold, same bytes)
  local row=$1 name=$1-ens5
  [[ -f "$RUNS/$name/summary.json" && ! -f "$RUNS/$name/.growing" ]] && return 0
  if [[ ! -d "$RUNS/$name" ]]; then
    [[ -f "$RUNS/$row/summary.json" ]] || { echo "finish the row $row first" >&2; exit 2; }
    cp -a "$RUNS/$row" "$RUNS/$name.tmp" && touch "$RUNS/$name.tmp/.growing" && mv "$RUNS/$name.tmp" "$RUNS/$name"
  fi
  local A=lodo/Aperio_CS2 S=lodo/Hamamatsu_S360 X=lodo/Hamamatsu_XR T=lodo/TUPAC16  # two jobs of about equal size
  folds $name $A/fold1 $A/fold2 $A/fold3 $A/fold4 $S/fold1 $S/fold2 $T/fold1 $T/fold2 &
  folds $name $X/fold1 $X/fold2 $X/fold3 $X/fold4 $S/fold3 $S/fold4 $T/fold3 $T/fold4 &
  wait
  rm -f "$RUNS/$name/.growing"
}
mkdir -p "$RUNS"
case $STREAM in
  a) stream_a ;;
  b) stream_b ;;
  all) stream_a & stream_b & wait ;;
  seeds) seeds ;;
  student-weight) student_weight ;;
  two-students) two_jobs lite0-128-hed-strong-crop80-distill-ens2 --fold-limit 2 --set distill_weight=0.5 \
                  --set "teacher_scores='docs/results/lodo4/oof_lite0-128-hed-strong-crop80-ens5_tta.csv'" ;;
  ensemble) row lite0-128 configs/lite0.toml; ensemble lite0-128 ;;
  ensemble:*) ensemble "${STREAM#ensemble:}" ;;
  arch-mix) arch_mix ;;
  arch-mix:*) arch_mix "${STREAM#arch-mix:}" ;;
  *) echo "usage: $0 [a|b|all|seeds|student-weight|two-students|ensemble|ensemble:ROW|arch-mix|arch-mix:FOLD]" \
          "[RUNS_DIR]" >&2
     exit 2 ;;
esac
