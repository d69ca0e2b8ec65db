#!/usr/bin/env bash
# Deletes the slice (and its queued resource with --queued). Checkpoints in gs:// stay.
#   jaxformer tpu delete --name=my-v4 --zone=us-central2-b [--queued]
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
[[ ${#ARGS[@]} -eq 0 ]] || die "delete.sh: unknown arguments: ${ARGS[*]}"
require ZONE NAME
location_flags
if [[ "$QUEUED" == 1 ]]; then
  run gcloud compute tpus queued-resources delete "$NAME" "${LOCATION[@]}" --force --quiet
else
  run gcloud compute tpus tpu-vm delete "$NAME" "${LOCATION[@]}" --quiet
fi
