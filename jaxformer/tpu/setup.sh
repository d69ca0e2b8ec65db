#!/usr/bin/env bash
# Installs this checkout of jaxformer (with the pinned jax[tpu] and libtpu: the tpu extra) on every
# worker of the slice, in $HOME/jaxformer-venv. Ships the committed tree (git archive HEAD), so
# every worker runs the same code.
#   jaxformer tpu setup --name=my-v4 --zone=us-central2-b
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
[[ ${#ARGS[@]} -eq 0 ]] || die "setup.sh: unknown arguments: ${ARGS[*]}"
require ZONE NAME
location_flags

git -C "$REPO_DIR" rev-parse --git-dir > /dev/null 2>&1 ||
  die "setup.sh: ships a git checkout of jaxformer (git archive HEAD) to the workers, and $REPO_DIR is not one \
(an install from a wheel): clone the repository, pip install -e it, and run jaxformer tpu setup from there"
tarball="${TMPDIR:-/tmp}/jaxformer-src-$NAME.tar.gz"
run git -C "$REPO_DIR" archive --format=tar.gz --output="$tarball" HEAD
for node in $(nodes); do
  run gcloud compute tpus tpu-vm scp "$tarball" "$node":jaxformer-src.tar.gz --worker=all "${LOCATION[@]}"
done

# jax 0.10 needs Python >= 3.11; TPU VM images ship 3.10, so install PYTHON if it is missing.
# shellcheck disable=SC2016  # $HOME and friends expand on the workers
remote="set -e; if ! command -v $PYTHON >/dev/null; then sudo apt-get update -q && sudo apt-get install -y -q $PYTHON $PYTHON-venv; fi; \
rm -rf $SRC && mkdir -p $SRC && tar -xzf \$HOME/jaxformer-src.tar.gz -C $SRC; \
[ -d $VENV ] || $PYTHON -m venv $VENV; \
$VENV/bin/pip install -q --upgrade pip; \
$VENV/bin/pip install -q -e \"${SRC}[tpu]\" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html; \
$VENV/bin/python -c 'import jax; print(jax.process_index(), jax.device_count(), jax.devices()[0].device_kind)'"
ssh_workers all "$remote"
