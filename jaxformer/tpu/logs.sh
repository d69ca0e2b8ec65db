#!/usr/bin/env bash
# Follows a run's log on one worker (default 0), or prints the last lines of every worker's log.
#   jaxformer tpu logs --name=my-v4 --zone=us-central2-b --run_name=c2-1b [--worker=3 | --worker=all]
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
worker=0
for arg in "${ARGS[@]}"; do
  case "$arg" in
    --worker=*) worker="${arg#--worker=}" ;;
    *) die "logs.sh: unknown argument $arg" ;;
  esac
done
require ZONE NAME RUN
state="if [ -f $LOG_DIR/$RUN.pid ] && kill -0 \$(cat $LOG_DIR/$RUN.pid) 2>/dev/null; then \
echo \"running (pid \$(cat $LOG_DIR/$RUN.pid))\"; elif [ -f $LOG_DIR/$RUN.exit ]; then \
echo \"exited \$(cat $LOG_DIR/$RUN.exit)\"; else echo 'not launched here'; fi"
if [[ "$worker" == all ]]; then
  ssh_workers all "echo \"== worker \$(hostname): $RUN \$($state)\"; tail -n 20 $LOG_DIR/$RUN.log 2>/dev/null"
else
  [[ "$worker" =~ ^[0-9]+$ ]] || die "logs.sh: --worker=$(quote "$worker"): a worker number or all"
  # Before any launch there is no log to follow: say so instead of waiting for one.
  ssh_workers "$worker" "if [ ! -f $LOG_DIR/$RUN.log ]; then echo \"tpu: no log of run $RUN on \$(hostname): \
launch it first (jaxformer tpu launch)\" >&2; exit 3; fi; tail -n 100 -F $LOG_DIR/$RUN.log"
fi
