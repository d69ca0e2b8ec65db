#!/usr/bin/env bash
# Creates the TPU slice: `gcloud compute tpus tpu-vm create`, or with --queued a queued resource
# (waits until it is ACTIVE). Settings: common.sh.
#   jaxformer tpu create --name=my-v4 --zone=us-central2-b --accelerator_type=v4-32 [--spot|--reserved] [--queued]
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
[[ ${#ARGS[@]} -eq 0 ]] || die "create.sh: unknown arguments: ${ARGS[*]}"
require ZONE NAME TYPE
location_flags

capacity=()
case "$CAPACITY" in
  spot) capacity=(--spot) ;;
  reserved) capacity=(--reserved) ;;
esac

if [[ "$QUEUED" == 1 ]]; then
  if (( SLICES > 1 )); then
    node=(--node-count="$SLICES" --node-prefix="$NAME")
  else
    node=(--node-id="$NAME")
  fi
  run gcloud compute tpus queued-resources create "$NAME" "${node[@]}" "${LOCATION[@]}" \
    --accelerator-type="$TYPE" --runtime-version="$RUNTIME" "${capacity[@]}"
  if [[ "$DRY_RUN" == 1 ]]; then
    run gcloud compute tpus queued-resources describe "$NAME" "${LOCATION[@]}" --format='value(state.state)'
    exit 0
  fi
  # Queued resources wait for capacity; poll until the slice exists.
  while true; do
    state="$(gcloud compute tpus queued-resources describe "$NAME" "${LOCATION[@]}" --format='value(state.state)')"
    case "$state" in
      ACTIVE) echo "tpu: $NAME is ACTIVE"; break ;;
      FAILED|SUSPENDED) die "queued resource $NAME is $state" ;;
      *) echo "tpu: $NAME is ${state:-unknown}; waiting"; sleep "${JAXFORMER_TPU_POLL_SECONDS:-60}" ;;
    esac
  done
else
  run gcloud compute tpus tpu-vm create "$NAME" "${LOCATION[@]}" \
    --accelerator-type="$TYPE" --version="$RUNTIME" "${capacity[@]}"
fi
