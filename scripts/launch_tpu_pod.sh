#!/usr/bin/env bash
# One entry point on every worker of a Cloud TPU VM pod slice (the same command on each host).
#
#   scripts/launch_tpu_pod.sh TPU_NAME ZONE python -m jaxbrain.main --config=configs/brainmae.py \
#       --workdir=/mnt/shared/runs/brainmae
#
# Needs the gcloud CLI and the repository checked out at the same path on every worker
# ($REPO_DIR, default: this checkout's path), installed with `make install`. jax.distributed
# finds the pod's hosts itself (jaxtrain.distributed.maybe_initialize sees TPU_WORKER_HOSTNAMES);
# each host reads its share of every global batch, and --workdir must be a filesystem that every
# worker sees (e.g. a Filestore or GCS FUSE mount): checkpoints are written there through orbax,
# results by process 0.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 TPU_NAME ZONE COMMAND [ARGS...]" >&2
  exit 2
fi
tpu=$1 zone=$2; shift 2
repo=${REPO_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
cmd=$(printf '%q ' "$@")
exec gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all \
    --command="cd $(printf '%q' "$repo") && PATH=.venv/bin:\$PATH $cmd"
