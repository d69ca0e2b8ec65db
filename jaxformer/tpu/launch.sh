#!/usr/bin/env bash
# Starts the same command on every worker of the slice: detached, one log per worker in
# $HOME/jaxformer-logs/RUN.log, and RUN.exit holding the exit code when it ends. With
# --foreground it waits for the command on all workers and passes its output through (the sweep
# launcher uses this). After `--` comes the jaxformer command; MODEL_DIR defaults to
# BUCKET/RUN_NAME, so a relaunch of the same run resumes from its latest checkpoint there.
#   jaxformer tpu launch --name=my-v4 --zone=us-central2-b --bucket=gs://my-bucket --run_name=c2-1b \
#     -- jaxformer train --gin_file=runs/codegen2_1b_v4_32.gin
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
foreground=0
command=()
for ((i = 0; i < ${#ARGS[@]}; i++)); do
  case "${ARGS[i]}" in
    --foreground) foreground=1 ;;
    --) command=("${ARGS[@]:i+1}"); break ;;
    *) die "launch.sh: unknown argument ${ARGS[i]} (the command goes after --)" ;;
  esac
done
[[ ${#command[@]} -gt 0 ]] || die "launch.sh: no command; put it after --, e.g. -- jaxformer train --gin_file=..."
[[ "${command[0]}" == jaxformer ]] || die "launch.sh: the command must start with jaxformer, not ${command[0]}"
require ZONE NAME RUN

args=("${command[@]:1}")
if [[ "${args[0]:-}" == train ]] && ! printf '%s\n' "${args[@]}" | grep -q -e '^--model_dir=' -e '^--gin.MODEL_DIR='; then
  require BUCKET
  args+=("--model_dir=${BUCKET%/}/$RUN")
fi
quoted="$(quote "${args[@]}")"
log="$LOG_DIR/$RUN.log"
status="$LOG_DIR/$RUN.exit"
pidfile="$LOG_DIR/$RUN.pid"
stopped="$LOG_DIR/$RUN.stopped"  # stop.sh's mark: a relaunch clears it with the old exit code
# Each job's wrapper pid goes to RUN.pid (stop.sh, supervise.sh and logs.sh find the job by it) and
# leaves with the job. Before starting: refuse beside a live job of ours; clear stale processes
# holding the TPU and libtpu's lock file (a killed job leaves them and the next one cannot start).
preflight="$(live_jobs_check) && holders=\$(sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null || true) && \
{ [ -z \"\$holders\" ] || sudo kill -9 \$holders; } && sudo rm -f /tmp/libtpu_lockfile"
if [[ "$foreground" == 1 ]]; then
  # The pre-flight runs to the end first: a trailing `&` would background the whole && list, so
  # the pid file could be written before its folder exists, or be taken for a live job of its own.
  remote="{ mkdir -p $LOG_DIR && cd $SRC && $preflight && rm -f $status $stopped; } || exit \$?; \
($VENV/bin/jaxformer $quoted 2>&1 | tee $log; exit \${PIPESTATUS[0]}) & job=\$!; echo \$job > $pidfile; \
wait \$job; code=\$?; echo \$code > $status; rm -f $pidfile; exit \$code"
else
  inner="$VENV/bin/jaxformer $quoted > $log 2>&1; echo \$? > $status; rm -f $pidfile"
  remote="mkdir -p $LOG_DIR && cd $SRC && $preflight && rm -f $status $stopped && \
{ nohup bash -c $(quote "$inner") > /dev/null 2>&1 < /dev/null & echo \$! > $pidfile; }"
fi
ssh_workers all "$remote"
