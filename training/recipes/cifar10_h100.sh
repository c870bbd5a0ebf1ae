#!/usr/bin/env bash
# Issue #6's trainings on the lent GPU with the project's own commands. Small models leave the GPU idle, so a
# phase runs its trainings as parallel processes; one device call runs its phases in order.
#
# Prepare here:   mkdir -p .device/cifar10 && cp ../shared/data/cifar10/{*.tar.gz,batches.meta.txt} .device/cifar10/
# First call:     carry [".device/cifar10"]; command: DEADLINE=<s> bash training/recipes/cifar10_h100.sh fp static dynamic
# Next call:      on the same warm machine runs/gpu is still there: the same command goes on where the deadline
#                 stopped it. On a fresh machine, first unpack here what came back and carry "runs/gpu" too:
#                 for f in <files_at>/*.tar.gz; do tar xzf "$f" -C runs/gpu; done
#                 find runs/gpu -name model.pt -execdir rm -f last.pt \;   # finished: no resume state to carry
#                 (a run cut short resumes from its last.pt; a finished run, one with model.pt, is not started again).
# Phases:         fp -> static (2-8 bits, from fp) -> dynamic (from static, beside w3 and w4 continued for as many
#                 epochs, and a 2-bit run continued from w3: the same schedule) on the GPU; a phase whose starting
#                 checkpoints are missing, or that would start less than MIN_PHASE_S (default 60) seconds before
#                 the deadline, is skipped. export runs here on the CPU (evaluation runs the deployed arithmetic
#                 on the CPU wherever it runs, so it costs no device minutes here); it evaluates each run once
#                 (delete <run>/eval to evaluate it again) and writes the tables, plots and each run's config,
#                 log and evaluation to docs/results/gpu (the same schedule: docs/results/gpu-same-schedule).
# Schedule:       FP_EPOCHS (30), STATIC_EPOCHS (12), DYNAMIC_EPOCHS (8): short next to the usual CIFAR length, so
#                 that every phase fits in one session's 15 device minutes; it costs the models some accuracy, but
#                 the comparison asks for the same schedule for every run, which this is, not the longest.
# DEADLINE:       seconds after the start at which every training stops, keeping its last finished epoch, so
#                 that packing always ends inside the call's limit: about 45 less than the limit the call gets
#                 (600, or less when the session's device budget is lower). Default 540.
# Sent back:      the runs trained in this call, in at most 8 gzip archives (the most files the device returns),
#                 two or more runs to an archive when needed, with last.pt only for runs that did not finish.
# SMOKE=1:        every phase at toy size on the CPU (resnet8, 1 epoch, a few hundred images): a rehearsal.
set -euo pipefail
(($#)) || { echo "usage: $0 PHASE... (fp | static | dynamic | export)" >&2; exit 2; }
R=runs/gpu
DOCS=${DOCS:-docs/results/gpu}  # export's tables, plots and the runs' small files, for docs/results.md
FP_EPOCHS=${FP_EPOCHS:-30} STATIC_EPOCHS=${STATIC_EPOCHS:-12} DYNAMIC_EPOCHS=${DYNAMIC_EPOCHS:-8}
for phase in "$@"; do
  case "$phase" in fp | static | dynamic | export) ;; *) echo "unknown phase $phase" >&2; exit 2 ;; esac
done
run_args=(--device cuda --amp --batch-size 256)
[ -n "${SMOKE:-}" ] && run_args=(--device cpu --arch resnet8 --batch-size 64 --epochs 1 --train-limit 640 --eval-limit 200)
. "$(dirname "$0")/lib.sh"
for phase in "$@"; do
  [ "$phase" = export ] || phase_fits "$phase" || continue
  case "$phase" in
    fp)      # ~2.3 s/epoch alone on the H100 (device.md)
      train fp --epochs "$FP_EPOCHS" --lr 0.1 --warmup-epochs 2 ;;
    static)  # six static baselines at once, init from the fp model
      needs fp || continue
      for b in 2 3 4 5 6 8; do
        train w$b --precision static --bits $b --init $R/fp/model.pt --epochs "$STATIC_EPOCHS" --lr 0.02
      done ;;
    dynamic) # the paper's setting and a wider candidate set at two targets; init from the static model at the target
      needs w3 w4 || continue
      e=(--epochs "$DYNAMIC_EPOCHS" --lr 0.02)
      d=(--precision dynamic "${e[@]}")
      # the same schedule for static: w3 and w4 continued for as many epochs as the dynamic runs train, and a
      # 2-bit run continued from w3 (the fair 2-bit point for {2..6} from w3: on the CPU it scored 14 points
      # above 2 bits trained from fp)
      for b in 3 4; do train w${b}_cont --precision static --bits $b --init $R/w$b/model.pt "${e[@]}"; done
      train w2_cont --precision static --bits 2 --init $R/w3/model.pt "${e[@]}"
      train dq345_t4 "${d[@]}" --candidates 3,4,5 --target-bits 4 --init $R/w4/model.pt
      train dq23456_t4 "${d[@]}" --candidates 2,3,4,5,6 --target-bits 4 --init $R/w4/model.pt
      train dq23456_t3 "${d[@]}" --candidates 2,3,4,5,6 --target-bits 3 --init $R/w3/model.pt
      # where the bits go: the sensitivity term beside the diversity term (on the CPU, plain runs collapsed to
      # one plan for every image; with both terms costlier images were the harder ones); two extra forward
      # passes per step. (The diversity term alone and the 8-bit controller, tried on the CPU, stay out: fewer
      # processes run faster.)
      train dq345_t4_div_sens "${d[@]}" --candidates 3,4,5 --target-bits 4 --diversity 0.5 --sensitivity 2 \
        --init $R/w4/model.pt
      ;;
    export)  # evaluate every finished run, then two results tables and plots for docs/results.md: against the
             # separately trained static runs, and at the same schedule (static runs continued)
      runs=() same=()
      for r in "$R"/fp "$R"/w? "$R"/w?_cont "$R"/dq*; do
        [ -f "$r/model.pt" ] || continue
        # evaluated once (a later export only adds the runs that finished since), every run in the models' own
        # float arithmetic, so that full-precision and 8-bit runs sit in the same tables (bundles measure int8)
        evaluate_once "$r"
        # what docs/results.md links to: each run's config, log, evaluation and, for dynamic runs, its figures
        mkdir -p "$DOCS/runs/${r##*/}"
        cp "$r/config.json" "$r/log.jsonl" "$r/eval/eval.json" "$DOCS/runs/${r##*/}/"
        case "$r" in
          *_cont) same+=("$r") ;;
          */dq*)  runs+=("$r") same+=("$r")
                  cp "$r"/eval/{bits_per_layer,bitflops_distribution,images_cheapest,images_costliest}.png "$DOCS/runs/${r##*/}/" ;;
          *)      runs+=("$r") ;;
        esac
      done
      ((${#runs[@]})) || { echo "export: no finished run in $R" >&2; exit 1; }
      python3 -m training compare "${runs[@]}" --out "$DOCS"
      if ((${#same[@]})); then python3 -m training compare "${same[@]}" --out "$DOCS-same-schedule"; fi ;;
  esac
  wait_all  # the next phase starts from this one's checkpoints
done
pack
exit $rc
