# shellcheck shell=bash disable=SC2034,SC2016
# (SC2034: the variables are for the scripts that source this file; SC2016: $HOME expands on the workers.)
# Settings and helpers shared by the tpu/ scripts (sourced, never run).
#
# Every setting comes from, in increasing priority: built-in defaults, the file named by
# --config=FILE or $JAXFORMER_TPU_CONFIG (bash assignments of the variables below), the
# environment, and flags.
#
#   flag                 variable                  meaning
#   --project=P          JAXFORMER_TPU_PROJECT     GCP project (default: gcloud's configured one)
#   --zone=Z             JAXFORMER_TPU_ZONE        e.g. us-central2-b (v4)
#   --name=N             JAXFORMER_TPU_NAME        the slice (TPU VM / queued-resource) name
#   --accelerator_type=T JAXFORMER_TPU_TYPE        v4-32, v5p-64, v5litepod-16, v6e-16, ...
#   --runtime_version=R  JAXFORMER_TPU_RUNTIME     TPU VM image (default by generation: v4
#                                                  tpu-ubuntu2204-base, v5e v2-alpha-tpuv5-lite,
#                                                  v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e)
#   --bucket=B           JAXFORMER_TPU_BUCKET      gs://bucket for checkpoints (MODEL_DIR default)
#   --spot | --reserved | --on_demand
#                        JAXFORMER_TPU_CAPACITY    spot, reserved or on_demand (default)
#   --queued             JAXFORMER_TPU_QUEUED=1    create through queued resources
#   --num_slices=N       JAXFORMER_TPU_SLICES      multi-slice: N slices NAME-0..NAME-(N-1) joined over
#                                                  DCN (queued resources only; bind
#                                                  sharding.make_mesh.dcn_mesh_shape to match)
#   --run_name=R         JAXFORMER_TPU_RUN         names the log files and the default MODEL_DIR
#   --python=PY          JAXFORMER_TPU_PYTHON      interpreter on the workers (default python3.11)
#   --dry-run                                      print every command instead of running it

set -euo pipefail

TPU_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The checkout these scripts belong to (jaxformer/tpu/ inside it); setup.sh ships it to the workers.
REPO_DIR="$(dirname "$(dirname "$TPU_DIR")")"
DRY_RUN=0
ARGS=()          # what a script's own parser gets: flags common.sh does not know, and "--" onwards

_load_config() {
  local file=""
  local arg
  for arg in "$@"; do
    case "$arg" in
      --config=*) file="${arg#--config=}" ;;
    esac
  done
  file="${file:-${JAXFORMER_TPU_CONFIG:-}}"
  if [[ -n "$file" ]]; then
    if [[ ! -f "$file" ]]; then
      echo "tpu: --config=$file: no such file" >&2
      exit 2
    fi
    # shellcheck source=/dev/null
    source "$file"
  fi
}

parse_common() {
  # Environment values win over the config file: remember them before sourcing it.
  local env_project="${JAXFORMER_TPU_PROJECT:-}" env_zone="${JAXFORMER_TPU_ZONE:-}"
  local env_name="${JAXFORMER_TPU_NAME:-}" env_type="${JAXFORMER_TPU_TYPE:-}"
  local env_runtime="${JAXFORMER_TPU_RUNTIME:-}" env_bucket="${JAXFORMER_TPU_BUCKET:-}"
  local env_capacity="${JAXFORMER_TPU_CAPACITY:-}" env_queued="${JAXFORMER_TPU_QUEUED:-}"
  local env_run="${JAXFORMER_TPU_RUN:-}" env_python="${JAXFORMER_TPU_PYTHON:-}"
  local env_slices="${JAXFORMER_TPU_SLICES:-}"
  _load_config "$@"
  PROJECT="${env_project:-${JAXFORMER_TPU_PROJECT:-}}"
  ZONE="${env_zone:-${JAXFORMER_TPU_ZONE:-}}"
  NAME="${env_name:-${JAXFORMER_TPU_NAME:-}}"
  TYPE="${env_type:-${JAXFORMER_TPU_TYPE:-}}"
  RUNTIME="${env_runtime:-${JAXFORMER_TPU_RUNTIME:-}}"
  BUCKET="${env_bucket:-${JAXFORMER_TPU_BUCKET:-}}"
  CAPACITY="${env_capacity:-${JAXFORMER_TPU_CAPACITY:-on_demand}}"
  QUEUED="${env_queued:-${JAXFORMER_TPU_QUEUED:-0}}"
  RUN="${env_run:-${JAXFORMER_TPU_RUN:-}}"
  PYTHON="${env_python:-${JAXFORMER_TPU_PYTHON:-python3.11}}"
  SLICES="${env_slices:-${JAXFORMER_TPU_SLICES:-1}}"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --config=*) ;;
      --project=*) PROJECT="${1#*=}" ;;
      --zone=*) ZONE="${1#*=}" ;;
      --name=*) NAME="${1#*=}" ;;
      --accelerator_type=*) TYPE="${1#*=}" ;;
      --runtime_version=*) RUNTIME="${1#*=}" ;;
      --bucket=*) BUCKET="${1#*=}" ;;
      --spot) CAPACITY=spot ;;
      --reserved) CAPACITY=reserved ;;
      --on_demand) CAPACITY=on_demand ;;
      --queued) QUEUED=1 ;;
      --run_name=*) RUN="${1#*=}" ;;
      --python=*) PYTHON="${1#*=}" ;;
      --num_slices=*) SLICES="${1#*=}" ;;
      --dry-run|--dry_run) DRY_RUN=1 ;;
      --) ARGS+=("$@"); break ;;
      *) ARGS+=("$1") ;;
    esac
    shift
  done
  [[ -n "$RUNTIME" ]] || RUNTIME="$(default_runtime "$TYPE")"
  check_settings
  case "$CAPACITY" in
    spot|reserved|on_demand) ;;
    *) die "capacity '$CAPACITY' (JAXFORMER_TPU_CAPACITY): use spot, reserved or on_demand" ;;
  esac
  [[ "$SLICES" =~ ^[1-9][0-9]*$ ]] || die "--num_slices=$SLICES (JAXFORMER_TPU_SLICES) must be a positive number"
  if (( SLICES > 1 )) && [[ "$QUEUED" != 1 ]]; then
    die "--num_slices=$SLICES: several slices are created through queued resources; add --queued"
  fi
}

# What each setting may hold. Every value reaches a gcloud argument or a command run on every worker, so
# anything else is refused before a command is built (a run name with `;` or a space would run on them).
NAME_PATTERN='^[A-Za-z0-9_][A-Za-z0-9._-]*$'

check_name() {
  # check_name FLAG VALUE: slice and run names: letters, digits, '.', '_', '-' (not first: '.' or '-').
  [[ -z "$2" || "$2" =~ $NAME_PATTERN ]] ||
    die "$1=$(quote "$2"): use letters, digits, '.', '_' and '-' only (not starting with '.' or '-')"
}

check_settings() {
  check_name --name "$NAME"
  check_name --run_name "$RUN"
  check_name --runtime_version "$RUNTIME"
  [[ -z "$ZONE" || "$ZONE" =~ ^[a-z0-9-]+$ ]] || die "--zone=$(quote "$ZONE"): a zone such as us-central2-b"
  [[ -z "$TYPE" || "$TYPE" =~ ^[a-z0-9-]+$ ]] || die "--accelerator_type=$(quote "$TYPE"): a type such as v4-32"
  [[ -z "$PROJECT" || "$PROJECT" =~ ^[a-z0-9][a-z0-9.:-]*$ ]] || die "--project=$(quote "$PROJECT"): a GCP project id"
  [[ -z "$BUCKET" || "$BUCKET" =~ ^gs://[a-z0-9][a-z0-9._-]*(/[A-Za-z0-9._/-]*)?$ ]] ||
    die "--bucket=$(quote "$BUCKET"): gs://BUCKET or gs://BUCKET/folder (letters, digits, '.', '_', '-', '/')"
  [[ "$PYTHON" =~ ^[A-Za-z0-9_/][A-Za-z0-9._/-]*$ ]] || die "--python=$(quote "$PYTHON"): an interpreter such as python3.11"
}

nodes() {
  # The TPU VM names: NAME for one slice; NAME-0 .. NAME-(N-1) for a multi-slice queued resource.
  if (( SLICES == 1 )); then
    echo "$NAME"
  else
    local i
    for ((i = 0; i < SLICES; i++)); do echo "$NAME-$i"; done
  fi
}

die() {
  echo "tpu: $*" >&2
  exit 2
}

require() {
  # require VAR...: each named setting must be set (names the flag and the variable if not).
  local var flag
  for var in "$@"; do
    if [[ -z "${!var}" ]]; then
      case "$var" in
        PROJECT) flag="--project / JAXFORMER_TPU_PROJECT" ;;
        ZONE) flag="--zone / JAXFORMER_TPU_ZONE" ;;
        NAME) flag="--name / JAXFORMER_TPU_NAME" ;;
        TYPE) flag="--accelerator_type / JAXFORMER_TPU_TYPE" ;;
        BUCKET) flag="--bucket / JAXFORMER_TPU_BUCKET" ;;
        RUN) flag="--run_name / JAXFORMER_TPU_RUN" ;;
        *) flag="$var" ;;
      esac
      die "$(basename "$0"): $flag is not set"
    fi
  done
}

quote() {
  # quote ARG...: each argument as the shell reads it back; plain words stay bare, others go in
  # single quotes (easier to read than printf %q, and as exact).
  local out=() arg q="'"
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+=("$arg")
    else
      out+=("$q${arg//$q/$q\\$q$q}$q")
    fi
  done
  printf '%s' "${out[*]}"
}

run() {
  # Runs a command, or with --dry-run prints it (shell-quoted, ready to paste).
  if [[ "$DRY_RUN" == 1 ]]; then
    quote "$@"
    echo
  else
    "$@"
  fi
}

location_flags() {
  # The --project/--zone pair every gcloud call takes (project only when set).
  LOCATION=(--zone="$ZONE")
  if [[ -n "$PROJECT" ]]; then
    LOCATION+=(--project="$PROJECT")
  fi
}

ssh_workers() {
  # ssh_workers WORKER COMMAND: runs COMMAND (one string) on a worker (a number, or all) of every
  # slice, all slices at once (a multi-slice job starts only when every slice runs it).
  location_flags
  local node pids=() code=0
  if (( SLICES == 1 )); then
    run gcloud compute tpus tpu-vm ssh "$NAME" --worker="$1" "${LOCATION[@]}" --command="$2"
    return
  fi
  for node in $(nodes); do
    run gcloud compute tpus tpu-vm ssh "$node" --worker="$1" "${LOCATION[@]}" --command="$2" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || code=$?; done
  return "$code"
}


LOG_DIR='$HOME/jaxformer-logs'
VENV='$HOME/jaxformer-venv'
SRC='$HOME/jaxformer'

# The jaxformer process of a job: the child of the wrapper whose pid RUN.pid holds (a foreground
# job's wrapper also runs tee, which must keep running while the job saves its checkpoint).
JOB_PATTERN='/jaxformer-venv/bin/jaxformer'

live_jobs_check() {
  # A worker command that fails (exit 3) naming every job still running there; stale pid files go.
  printf '%s' "for f in $LOG_DIR/*.pid; do [ -f \"\$f\" ] || continue; p=\$(cat \"\$f\"); \
if kill -0 \"\$p\" 2>/dev/null; then echo \"tpu: job \$(basename \"\$f\" .pid) is running (pid \$p) on \$(hostname); \
stop it first (jaxformer tpu stop)\" >&2; exit 3; fi; rm -f \"\$f\"; done"
}

default_runtime() {
  # The TPU VM image for an accelerator generation (Google's table of runtime versions).
  case "$1" in
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) echo tpu-ubuntu2204-base ;;
  esac
}
