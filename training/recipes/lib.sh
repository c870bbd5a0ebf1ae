# Shared by the GPU recipes (sourced): parallel trainings under one deadline, resumable across device calls,
# and the archives a device call sends back. The recipe sets R (its runs folder) and run_args first.
D=${DATA:-.device/cifar10}
OUT=${OUT:-/tmp/out}
DEADLINE=${DEADLINE:-540}
MIN_PHASE_S=${MIN_PHASE_S:-60}
mkdir -p "$R" "$OUT"
started=$SECONDS
names=() phase_names=() pids=() rc=0
left() { echo $((DEADLINE - (SECONDS - started))); }
train() {  # train NAME ARGS...: one training in the background, its own arguments before the run-wide ones
  local name=$1; shift
  if [ -f "$R/$name/model.pt" ]; then echo "$name: finished before this call"; return 0; fi
  local left; left=$(left)
  ((left >= 1)) || left=1  # past the deadline: stopped at once (timeout 0 would mean no limit)
  echo "+ $name: $*"
  mkdir -p "$R/$name"
  timeout -s TERM "$left" python3 -m training train --data "$D" --arch resnet20 --no-progress --out "$R/$name" \
    "$@" "${run_args[@]}" > "$R/$name.log" 2>&1 &
  names+=("$name") phase_names+=("$name") pids+=($!)
}
needs() {  # needs CHECKPOINT...: true when every starting checkpoint exists
  for c in "$@"; do [ -f "$R/$c/model.pt" ] || { echo "skipping $phase: $c has not finished" >&2; rc=1; return 1; }; done
}
wait_all() {  # a training stopped by the deadline (timeout's 124) resumes next call; any other failure is one
  local i status
  for i in "${!pids[@]}"; do
    status=0; wait "${pids[$i]}" || status=$?
    case $status in
      0) ;;
      124) echo "${phase_names[$i]}: stopped at the deadline; resumes from its last.pt next call" ;;
      *) echo "${phase_names[$i]}: FAILED (exit $status), see $R/${phase_names[$i]}.log" >&2; rc=1 ;;
    esac
  done
  pids=() phase_names=()
}
phase_fits() {  # phase_fits PHASE: false (and says why) when less than MIN_PHASE_S seconds are left
  (($(left) >= MIN_PHASE_S)) && return 0
  echo "skipping $1: less than ${MIN_PHASE_S} s before the deadline" >&2; rc=1; return 1
}
evaluate_once() {  # evaluate_once RUN: the run's float evaluation, once (delete RUN/eval to evaluate it again)
  [ -f "$1/eval/eval.json" ] ||
    python3 -m training evaluate --checkpoint "$1/model.pt" --data "$D" --out "$1/eval" --arithmetic float \
      ${SMOKE:+--limit 200}
}
pack() {  # at most 8 files come back: the runs trained in this call in as few groups as that needs, one archive each
  local per=$(( (${#names[@]} + 7) / 8 )) i name
  for ((i = 0; i < ${#names[@]}; i += per)); do
    local group=("${names[@]:i:per}") members=() skip=()
    for name in "${group[@]}"; do
      members+=("$name" "$name.log")
      # a finished run needs only model.pt to go on; an unfinished one its last.pt to resume
      [ -f "$R/$name/model.pt" ] && skip+=(--exclude "$name/last.pt")
      tail -n 2 "$R/$name.log"
    done
    tar czf "$OUT/$(IFS=-; echo "${group[*]}").tar.gz" -C "$R" "${skip[@]}" --exclude '*.tmp' "${members[@]}"
  done
  ls -la "$OUT"
}
# decode the JPEGs once (cached) before parallel trainings all try to
python3 -m training prepare --data "$D"
