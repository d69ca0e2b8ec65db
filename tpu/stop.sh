#!/usr/bin/env bash
# Stops jaxformer on every worker with SIGTERM: training saves a checkpoint at the current step and
# exits, so a later launch of the same run resumes there. The slice keeps running (delete.sh).
#   tpu/stop.sh --name=my-v4 --zone=us-central2-b
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
[[ ${#ARGS[@]} -eq 0 ]] || die "stop.sh: unknown arguments: ${ARGS[*]}"
require ZONE NAME
ssh_workers all "pkill -TERM -f '$VENV/bin/jaxformer' || true"
