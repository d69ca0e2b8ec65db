#!/usr/bin/env bash
# Keeps a run going on a spot or preemptible slice: every --poll_seconds it asks gcloud for the
# slice's state; when the slice is gone, PREEMPTED or TERMINATED it deletes what is left, creates
# it again, sets it up and relaunches the run, which resumes from its latest checkpoint in
# BUCKET/RUN_NAME. It launches the run itself first (an exit file left by an earlier launch says
# nothing of this one), then reads worker 0's exit file: 0 is finished (it stops); 143 (jaxformer
# saved and stopped on SIGTERM) is a preemption on a healthy slice, relaunched, unless stop.sh marked
# the run stopped (RUN.stopped: it stops); anything else is a failure (an error). --max_restarts
# bounds the recreations and relaunches together.
#   jaxformer tpu supervise --name=my-v4 --zone=us-central2-b --accelerator_type=v4-32 --spot \
#     --bucket=gs://my-bucket --run_name=c2-1b -- jaxformer train --gin_file=runs/codegen2_1b_v4_32.gin
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
poll=300
max_restarts=50
command=()
for ((i = 0; i < ${#ARGS[@]}; i++)); do
  case "${ARGS[i]}" in
    --poll_seconds=*) poll="${ARGS[i]#*=}" ;;
    --max_restarts=*) max_restarts="${ARGS[i]#*=}" ;;
    --) command=("${ARGS[@]:i}"); break ;;
    *) die "supervise.sh: unknown argument ${ARGS[i]}" ;;
  esac
done
[[ ${#command[@]} -gt 1 ]] || die "supervise.sh: no command; put it after --, e.g. -- jaxformer train --gin_file=..."
[[ "$poll" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "supervise.sh: --poll_seconds=$(quote "$poll") must be a number of seconds >= 0"
[[ "$max_restarts" =~ ^[0-9]+$ ]] || die "supervise.sh: --max_restarts=$(quote "$max_restarts") must be an integer >= 0"
require ZONE NAME TYPE RUN
location_flags

# The settings, passed on to the scripts this one calls.
settings=(--zone="$ZONE" --name="$NAME" --accelerator_type="$TYPE" --runtime_version="$RUNTIME"
          --run_name="$RUN" --python="$PYTHON")
[[ -n "$PROJECT" ]] && settings+=(--project="$PROJECT")
[[ -n "$BUCKET" ]] && settings+=(--bucket="$BUCKET")
[[ "$CAPACITY" != on_demand ]] && settings+=(--"$CAPACITY")
[[ "$QUEUED" == 1 ]] && settings+=(--queued --num_slices="$SLICES")
[[ "$DRY_RUN" == 1 ]] && settings+=(--dry-run)

slice_state() {
  # READY, CREATING, PREEMPTED, ... or MISSING when gcloud cannot find a slice; with several
  # slices, the first that is not READY speaks for all (one lost slice stops the whole job).
  local node state
  for node in $(nodes); do
    state="$(gcloud compute tpus tpu-vm describe "$node" "${LOCATION[@]}" --format='value(state)' 2>/dev/null || echo MISSING)"
    if [[ "$state" != READY ]]; then
      echo "$state"
      return
    fi
  done
  echo READY
}

run_status() {
  # The run's exit code on worker 0 ("stopped" when stop.sh stopped it), "running", or "absent".
  # shellcheck disable=SC2016  # expands on the worker
  gcloud compute tpus tpu-vm ssh "$(nodes | head -n 1)" --worker=0 "${LOCATION[@]}" --command="if [ -f $LOG_DIR/$RUN.pid ] && kill -0 \$(cat $LOG_DIR/$RUN.pid) 2>/dev/null; then echo running; elif [ -f $LOG_DIR/$RUN.exit ] && [ -f $LOG_DIR/$RUN.stopped ]; then echo stopped; elif [ -f $LOG_DIR/$RUN.exit ]; then cat $LOG_DIR/$RUN.exit; else echo absent; fi" 2>/dev/null || echo unreachable
}

restart() {
  # restart WHY: one more restart, or an error when --max_restarts are spent.
  if (( restarts >= max_restarts )); then
    die "$1, and --max_restarts=$max_restarts are spent"
  fi
  restarts=$((restarts + 1))
}

recreate() {
  # A queued resource outlives its preempted nodes: delete it whatever state the nodes are in.
  if [[ "$QUEUED" == 1 ]]; then
    bash "$TPU_DIR/delete.sh" "${settings[@]}" || true
  elif [[ "$1" != MISSING ]]; then
    bash "$TPU_DIR/delete.sh" "${settings[@]}"
  fi
  bash "$TPU_DIR/create.sh" "${settings[@]}"
  bash "$TPU_DIR/setup.sh" "${settings[@]}"
  bash "$TPU_DIR/launch.sh" "${settings[@]}" "${command[@]}"
}

if [[ "$DRY_RUN" == 1 ]]; then
  echo "# each poll:"
  for node in $(nodes); do
    run gcloud compute tpus tpu-vm describe "$node" "${LOCATION[@]}" --format='value(state)'
  done
  echo "# when the slice is PREEMPTED, TERMINATED or missing:"
  recreate PREEMPTED
  exit 0
fi

restarts=0
launched=0  # whether this supervise launched the run yet: an exit file before that is an earlier launch's
while true; do
  state="$(slice_state)"
  case "$state" in
    READY)
      status="$(run_status)"
      if [[ "$launched" == 0 && "$status" != running && "$status" != unreachable ]]; then
        echo "tpu: launching $RUN on $NAME"
        bash "$TPU_DIR/launch.sh" "${settings[@]}" "${command[@]}"
        launched=1
        status=running
      fi
      launched=1
      case "$status" in
        0) echo "tpu: run $RUN finished on $NAME"; exit 0 ;;
        stopped) echo "tpu: run $RUN was stopped (stop.sh) on $NAME; not relaunching it"; exit 0 ;;
        running|unreachable) ;;
        143) restart "run $RUN stopped on SIGTERM on a READY slice (a preemption or maintenance)"
             echo "tpu: run $RUN stopped on SIGTERM (a preemption or maintenance); relaunching it (restart $restarts)"
             bash "$TPU_DIR/launch.sh" "${settings[@]}" "${command[@]}" ;;
        absent) echo "tpu: $NAME is READY without the run; launching $RUN"
                bash "$TPU_DIR/launch.sh" "${settings[@]}" "${command[@]}" ;;
        *) die "run $RUN exited with $status on a READY slice; see jaxformer tpu logs --worker=all" ;;
      esac
      ;;
    MISSING|PREEMPTED|TERMINATED|STOPPED)
      restart "$NAME is $state"
      echo "tpu: $NAME is $state; recreating it (restart $restarts) and relaunching $RUN"
      recreate "$state"
      launched=1
      ;;
    *) echo "tpu: $NAME is $state; waiting" ;;
  esac
  sleep "$poll"
done
