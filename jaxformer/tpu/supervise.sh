#!/usr/bin/env bash
# Keeps a run going on a spot or preemptible slice: every --poll_seconds it asks gcloud for the
# slice's state; when the slice is gone, PREEMPTED or TERMINATED it deletes what is left, creates
# it again, sets it up and relaunches the run, which resumes from its latest checkpoint in
# BUCKET/RUN_NAME. It stops when the run's exit file on worker 0 says 0 (finished), or with an
# error when the run failed on a healthy slice or --max_restarts is spent.
#   tpu/supervise.sh --name=my-v4 --zone=us-central2-b --accelerator_type=v4-32 --spot \
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
  # The run's exit code on worker 0, "running", or "absent" (never launched on this slice).
  # shellcheck disable=SC2016  # expands on the worker
  gcloud compute tpus tpu-vm ssh "$(nodes | head -n 1)" --worker=0 "${LOCATION[@]}" --command="if [ -f $LOG_DIR/$RUN.exit ]; then cat $LOG_DIR/$RUN.exit; elif [ -f $LOG_DIR/$RUN.pid ] && kill -0 \$(cat $LOG_DIR/$RUN.pid) 2>/dev/null; then echo running; else echo absent; fi" 2>/dev/null || echo unreachable
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
while true; do
  state="$(slice_state)"
  case "$state" in
    READY)
      status="$(run_status)"
      case "$status" in
        0) echo "tpu: run $RUN finished on $NAME"; exit 0 ;;
        running|unreachable) ;;
        absent) echo "tpu: $NAME is READY without the run; launching $RUN"
                bash "$TPU_DIR/launch.sh" "${settings[@]}" "${command[@]}" ;;
        *) die "run $RUN exited with $status on a READY slice; see tpu/logs.sh --worker=all" ;;
      esac
      ;;
    MISSING|PREEMPTED|TERMINATED|STOPPED)
      if (( restarts >= max_restarts )); then
        die "$NAME is $state and --max_restarts=$max_restarts are spent"
      fi
      restarts=$((restarts + 1))
      echo "tpu: $NAME is $state; recreating it (restart $restarts) and relaunching $RUN"
      recreate "$state"
      ;;
    *) echo "tpu: $NAME is $state; waiting" ;;
  esac
  sleep "$poll"
done
