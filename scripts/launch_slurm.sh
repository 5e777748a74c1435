#!/usr/bin/env bash
# One entry point over a SLURM allocation: one task per GPU (or per node), all joined by
# jax.distributed. Submit with sbatch, or run inside an salloc:
#
#   sbatch --nodes=2 --ntasks-per-node=4 --gpus-per-task=1 scripts/launch_slurm.sh \
#       python -m jaxvision.main --config=configs/adafocusv2.py:actnet_p128 --workdir=/shared/runs/actnet
#
# srun starts the command once per task; jax.distributed.initialize() reads the SLURM environment
# (SLURM_NTASKS > 1: jaxtrain.distributed.maybe_initialize calls it), so every task sees all
# devices of the job, reads its share of each global batch and writes checkpoints through orbax
# to --workdir, which must be on a filesystem that every node mounts.
#SBATCH --job-name=jaxbrain
#SBATCH --output=slurm-%j.out
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: sbatch [SLURM OPTIONS] $0 COMMAND [ARGS...]" >&2
  exit 2
fi
repo=${REPO_DIR:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}
cd "$repo"
export PATH="$repo/.venv/bin:$PATH"
exec srun --kill-on-bad-exit=1 "$@"
