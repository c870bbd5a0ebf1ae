#!/usr/bin/env bash
# Issues #15's and #16's trainings on the lent GPU: full precision to convergence over three seeds, the activation
# quantizers compared on one schedule, every static width over three seeds; then weights good at every candidate
# width (multi-precision) and controllers trained on them, against that static line. Each phase runs its trainings as parallel
# processes (small models leave the GPU idle); one device call runs its phases in order, up to DEADLINE.
#
# Prepare here:   mkdir -p .device/cifar10 && cp ../shared/data/cifar10/{*.tar.gz,batches.meta.txt} .device/cifar10/
# Device call:    carry [".device/cifar10"]; command: DEADLINE=<s> bash training/recipes/accuracy.sh PHASE...
#                 Checkpoints already kept in training/checkpoints/accuracy (committed) are copied into the runs
#                 folder first, so a call on a fresh machine goes on where the last one stopped.
# After a call:   for f in <files_at>/*.tar.gz; do tar xzf "$f" -C runs/gpu-accuracy; done
#                 bash training/recipes/accuracy.sh keep     # here: finished model.pt / unfinished last.pt
#                 git add training/checkpoints/accuracy        # (about 1 MB / 2 MB each) into the repository
# Phases (in this order; a phase whose starting checkpoints are missing is skipped, saying which):
#   probe   seconds per epoch of 2-epoch fp runs, one at a time: eager bf16, + channels-last, + torch.compile,
#           + batch 512; set SPEED and BATCH from it for the other phases
#   fp      full precision, one run per seed (SEEDS), FP_EPOCHS (200), lr 0.1 x BATCH/256, Nesterov, wd 5e-4, cosine
#   actq    the activation quantizer on one schedule: dorefa, pact, lsq at 4 and 2 bits from fp_s0, ACTQ_EPOCHS
#   static  every width in STATIC_BITS (2 3 4 5 6 8) x SEEDS with the quantizer ACT (lsq), calibrated from fp_s<seed>,
#           STATIC_EPOCHS (60), lr 0.02 x BATCH/256; DISTILL=1 adds distillation from fp_s<seed>
#   long    w4_s0 and w2_s0 at twice STATIC_EPOCHS: whether more epochs still help
#   multi   (#16) per seed, every width in CANDIDATES (2,3,4,5,6) on each batch from fp_s<seed>, switchable BN,
#           narrower widths distilled from the widest, MULTI_EPOCHS (60)
#   dynamic (#16) per seed and target in TARGETS (3 4): a controller on multi_s<seed>, 8-bit, tau annealed 1 -> 0.1,
#           the whole network held to the static twin's Bit-FLOPs (--cost-scope total), DYNAMIC_EPOCHS (20)
#   export  here or there: evaluate every finished run (float arithmetic, once) and write the tables and plots to
#           DOCS (docs/results/accuracy): all runs, seeds grouped as mean +- sd; and the quantizer comparison
#   keep    here: copy the runs' checkpoints into training/checkpoints/accuracy
# DEADLINE:       seconds after the start at which every training stops, keeping its last finished epoch (about 45
#                 less than the call's limit). Default 540.
# Sent back:      the runs trained in this call in at most 8 gzip archives, last.pt only for unfinished runs.
# SMOKE=1:        every phase at toy size on the CPU (resnet8, 1 epoch, a few hundred images): a rehearsal.
set -euo pipefail
(($#)) || { echo "usage: $0 PHASE... (probe | fp | actq | static | long | multi | dynamic | export | keep)" >&2; exit 2; }
for phase in "$@"; do
  case "$phase" in probe | fp | actq | static | long | multi | dynamic | export | keep) ;; *) echo "unknown phase $phase" >&2; exit 2 ;; esac
done
R=${RUNS:-runs/gpu-accuracy}
KEPT=${KEPT:-training/checkpoints/accuracy}
DOCS=${DOCS:-docs/results/accuracy}
SEEDS=${SEEDS:-0 1 2} STATIC_BITS=${STATIC_BITS:-2 3 4 5 6 8} ACT=${ACT:-lsq}
FP_EPOCHS=${FP_EPOCHS:-200} ACTQ_EPOCHS=${ACTQ_EPOCHS:-30} STATIC_EPOCHS=${STATIC_EPOCHS:-60}
CANDIDATES=${CANDIDATES:-2,3,4,5,6} TARGETS=${TARGETS:-3 4} MULTI_EPOCHS=${MULTI_EPOCHS:-60} DYNAMIC_EPOCHS=${DYNAMIC_EPOCHS:-20}
PROBE_EPOCHS=2 BATCH=${BATCH:-256} SPEED=${SPEED:---amp --channels-last}
read -r -a speed <<< "$SPEED"
lr() { awk -v base="$1" -v b="$BATCH" 'BEGIN { printf "%g", base * b / 256 }'; }  # linear scaling with the batch
base_args=(--device cuda --batch-size "$BATCH")
probes=("eager:--amp" "cl:--amp --channels-last" "compile:--amp --channels-last --compile"
        "b512:--amp --channels-last --batch-size 512")
if [ -n "${SMOKE:-}" ]; then
  base_args=(--device cpu --arch resnet8 --batch-size 64 --train-limit 640 --eval-limit 200)
  speed=() FP_EPOCHS=1 ACTQ_EPOCHS=1 STATIC_EPOCHS=1 PROBE_EPOCHS=1 MULTI_EPOCHS=1 DYNAMIC_EPOCHS=1
  probes=("eager:--amp" "cl:--amp --channels-last" "b512:--batch-size 128")  # torch 1.13 here: no compile
fi
run_args=("${base_args[@]}" "${speed[@]}")
if [ "$*" = keep ]; then  # here, after a call: nothing to train, so nothing of lib.sh's set-up
  mkdir -p "$KEPT"
  for r in "$R"/*/; do
    r=${r%/} name=${r##*/}
    [ -f "$r/config.json" ] || continue
    mkdir -p "$KEPT/$name"
    cp "$r/config.json" "$KEPT/$name/"
    [ -f "$r/log.jsonl" ] && cp "$r/log.jsonl" "$KEPT/$name/"
    if [ -f "$r/model.pt" ]; then cp "$r/model.pt" "$KEPT/$name/" && rm -f "$KEPT/$name/last.pt"
    elif [ -f "$r/last.pt" ]; then cp "$r/last.pt" "$KEPT/$name/"; fi
    echo "kept $name: $(ls "$KEPT/$name" | tr '\n' ' ')"
  done
  exit 0
fi
. "$(dirname "$0")/lib.sh"
# what earlier calls kept: a finished run is not trained again, an unfinished one resumes from its last.pt
if [ -d "$KEPT" ]; then
  for k in "$KEPT"/*/; do
    k=${k%/} name=${k##*/}
    [ -f "$R/$name/model.pt" ] && continue
    mkdir -p "$R/$name"
    for f in model.pt last.pt config.json log.jsonl; do
      [ -f "$k/$f" ] && [ ! -f "$R/$name/$f" ] && cp "$k/$f" "$R/$name/"
    done
  done
fi
static_run() {  # static_run NAME BITS SEED EPOCHS ACT
  train "$1" --precision static --bits "$2" --seed "$3" --epochs "$4" --act "$5" --lr "$(lr 0.02)" \
    --init "$R/fp_s$3/model.pt" ${DISTILL:+--distill "$R/fp_s$3/model.pt"}
}
for phase in "$@"; do
  [ "$phase" = export ] || phase_fits "$phase" || continue
  case "$phase" in
    probe)  # one at a time, so that each figure is the GPU's alone; the other phases read SPEED and BATCH
      for cfg in "${probes[@]}"; do
        read -r -a extra <<< "${cfg#*:}"
        run_args=("${base_args[@]}" "${extra[@]}")  # after the run's own arguments: these win
        train "probe_${cfg%%:*}" --epochs "$PROBE_EPOCHS" --lr 0.1
        wait_all
      done
      run_args=("${base_args[@]}" "${speed[@]}")
      for p in "$R"/probe_*/log.jsonl; do
        [ -f "$p" ] && echo "${p%/log.jsonl}: $(python3 -c 'import json,sys; print(" ".join(str(json.loads(l)["seconds"]) for l in open(sys.argv[1])), "s per epoch")' "$p")"
      done ;;
    fp)
      for s in $SEEDS; do train "fp_s$s" --epochs "$FP_EPOCHS" --lr "$(lr 0.1)" --warmup-epochs 2 --seed "$s"; done ;;
    actq)
      needs fp_s0 || continue
      for act in dorefa pact lsq; do for b in 4 2; do static_run "${act}_w$b" "$b" 0 "$ACTQ_EPOCHS" "$act"; done; done ;;
    static)
      for s in $SEEDS; do needs "fp_s$s" || continue 2; done
      for s in $SEEDS; do for b in $STATIC_BITS; do static_run "w${b}_s$s" "$b" "$s" "$STATIC_EPOCHS" "$ACT"; done; done ;;
    long)
      needs fp_s0 || continue
      for b in 4 2; do static_run "w${b}_s0_long" "$b" 0 $((2 * STATIC_EPOCHS)) "$ACT"; done ;;
    multi)
      for s in $SEEDS; do needs "fp_s$s" || continue 2; done
      for s in $SEEDS; do
        train "multi_s$s" --precision multi --switchable-bn --candidates "$CANDIDATES" --act "$ACT" --seed "$s" \
          --epochs "$MULTI_EPOCHS" --lr "$(lr 0.02)" --init "$R/fp_s$s/model.pt"
      done ;;
    dynamic)
      for s in $SEEDS; do needs "multi_s$s" || continue 2; done
      for s in $SEEDS; do for t in $TARGETS; do
        train "dq_t${t}_s$s" --precision dynamic --switchable-bn --candidates "$CANDIDATES" --act "$ACT" --seed "$s" \
          --target-bits "$t" --cost-scope total --controller-bits 8 --tau 1 --tau-end 0.1 --epochs "$DYNAMIC_EPOCHS" \
          --lr "$(lr 0.005)" --init "$R/multi_s$s/model.pt"
      done; done ;;
    export)
      all=() actq=()
      for r in "$R"/fp_s* "$R"/w*_s* "$R"/dorefa_w* "$R"/pact_w* "$R"/lsq_w* "$R"/multi_s* "$R"/dq_t*; do
        [ -f "$r/model.pt" ] || continue
        evaluate_once "$r"
        mkdir -p "$DOCS/runs/${r##*/}"
        cp "$r/config.json" "$r/log.jsonl" "$r/eval/eval.json" "$DOCS/runs/${r##*/}/"
        case "${r##*/}" in
          dorefa_* | pact_* | lsq_*) actq+=("$r") ;;
          fp_s0) all+=("$r") actq+=("$r") ;;
          *) all+=("$r") ;;
        esac
      done
      ((${#all[@]})) || { echo "export: no finished run in $R" >&2; exit 1; }
      python3 -m training compare "${all[@]}" --out "$DOCS"
      if ((${#actq[@]} > 1)); then python3 -m training compare "${actq[@]}" --out "$DOCS/quantizers"; fi ;;
  esac
  wait_all  # the next phase starts from this one's checkpoints
done
pack
exit $rc
