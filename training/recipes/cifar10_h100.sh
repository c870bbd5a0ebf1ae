#!/usr/bin/env bash
# Issue #6's trainings on the lent H100, one phase per device call (each call <= 10 minutes), with the
# project's own commands. Small models leave the GPU idle, so each phase runs its trainings as parallel processes.
#
# Prepare here:   mkdir -p .device/cifar10 && cp ../shared/data/cifar10/{*.tar.gz,batches.meta.txt} .device/cifar10/
# Each call:      carry [".device/cifar10", "runs"]; command: bash training/recipes/cifar10_h100.sh <phase>
#                 then unpack $OUT/runs-<phase>.tar.xz into runs/ here, so the next call carries the checkpoints.
# Phases:         fp | static | dynamic | export   (every training resumes from its last.pt if cut short)
set -euo pipefail
phase=${1:?phase: fp | static | dynamic | export}
D=.device/cifar10
OUT=${OUT:-/tmp/out}
mkdir -p runs "$OUT"
T="python3 -m training train --data $D --arch resnet20 --device cuda --amp --no-progress --batch-size 256"
pids=()
bg() { local name=$1; shift; echo "+ $*"; "$@" > "runs/$name.log" 2>&1 & pids+=($!); }
case "$phase" in
  fp)      # ~2.3 s/epoch alone on the H100 (device.md)
    $T --out runs/fp --epochs 120 --lr 0.1 --warmup-epochs 2 ;;
  static)  # six static baselines at once, ~4.8 s/epoch each; init from the fp model
    for b in 2 3 4 5 6 8; do
      bg w$b $T --precision static --bits $b --init runs/fp/model.pt --epochs 60 --lr 0.02 --out runs/w$b
    done ;;
  dynamic) # the paper's setting and a wider candidate set at two targets; init from the static model at the target
    bg dq345_t4 $T --precision dynamic --candidates 3,4,5 --target-bits 4 --init runs/w4/model.pt --epochs 40 --lr 0.02 --out runs/dq345_t4
    bg dq23456_t4 $T --precision dynamic --candidates 2,3,4,5,6 --target-bits 4 --init runs/w4/model.pt --epochs 40 --lr 0.02 --out runs/dq23456_t4
    bg dq23456_t3 $T --precision dynamic --candidates 2,3,4,5,6 --target-bits 3 --init runs/w3/model.pt --epochs 40 --lr 0.02 --out runs/dq23456_t3
    # against the controller collapsing to one plan (seen in the CPU runs): the batch-diversity term
    bg dq345_t4_div $T --precision dynamic --candidates 3,4,5 --target-bits 4 --diversity 0.5 --init runs/w4/model.pt --epochs 40 --lr 0.02 --out runs/dq345_t4_div
    bg dq23456_t4_div $T --precision dynamic --candidates 2,3,4,5,6 --target-bits 4 --diversity 0.5 --init runs/w4/model.pt --epochs 40 --lr 0.02 --out runs/dq23456_t4_div
    ;;
  export)  # evaluations in parallel, then the results table and plot for docs/results.md
    for r in runs/fp runs/w* runs/dq*; do
      [ -f "$r/model.pt" ] || continue
      bg "eval-$(basename "$r")" python3 -m training evaluate --checkpoint "$r/model.pt" --data $D --out "$r/eval"
    done
    for p in "${pids[@]}"; do wait "$p" || true; done
    pids=()
    python3 -m training compare $(for r in runs/fp runs/w* runs/dq*; do [ -f "$r/eval/eval.json" ] && echo "$r"; done) --out runs/results ;;
  *) echo "unknown phase $phase" >&2; exit 2 ;;
esac
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
# checkpoints + logs + evaluations come back; last.pt only for runs that did not finish
tar cJf "$OUT/runs-$phase.tar.xz" --exclude='*.tmp' runs
ls -la "$OUT"
exit $rc
