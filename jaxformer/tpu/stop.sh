#!/usr/bin/env bash
# Stops jaxformer on every worker with SIGTERM: training saves a checkpoint at the current step and
# exits (code 143), so a later launch of the same run resumes there. The slice keeps running (delete.sh).
# Each stopped run gets RUN.stopped beside its exit file, so supervise.sh tells a stop from a preemption.
# The job is found by the pid launch.sh recorded ($HOME/jaxformer-logs/RUN.pid): --run_name stops that
# run, without it every job launched there.
#   jaxformer tpu stop --name=my-v4 --zone=us-central2-b [--run_name=c2-1b]
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
[[ ${#ARGS[@]} -eq 0 ]] || die "stop.sh: unknown arguments: ${ARGS[*]}"
require ZONE NAME
files="$LOG_DIR/*.pid"
[[ -z "$RUN" ]] || files="$LOG_DIR/$RUN.pid"
# shellcheck disable=SC2016  # expands on the workers
ssh_workers all "found=0; for f in $files; do [ -f \"\$f\" ] || continue; p=\$(cat \"\$f\"); \
r=\$(basename \"\$f\" .pid); touch $LOG_DIR/\$r.stopped; \
if pkill -TERM -P \"\$p\" -f '$JOB_PATTERN'; then found=1; \
echo \"stopped \$(basename \"\$f\" .pid) (pid \$p) on \$(hostname): it saves a checkpoint, then exits\"; fi; done; \
[ \$found = 1 ] || echo \"no running jaxformer job on \$(hostname)\""
