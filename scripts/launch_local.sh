#!/usr/bin/env bash
# N processes of one entry point on this machine, joined over loopback by jax.distributed: the
# multi-host code path (per-host data shards, cross-process collectives, process-0 writes) without
# a cluster. CPU collectives go through gloo.
#
#   scripts/launch_local.sh 2 python -m jaxbrain.main --config=configs/brainmae.py:smoke --workdir=runs/x
#
# Each process gets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (read by
# jaxtrain.distributed.maybe_initialize, as every entry point calls it), and
# JAX_LOCAL_CPU_DEVICES CPU devices (default 1). Process i's output goes to
# $LAUNCH_LOG_DIR/process_i.log (default: the terminal, prefixed). Exits with the first non-zero
# status of any process, after stopping the others.
set -euo pipefail
if [[ $# -lt 2 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES COMMAND [ARGS...]" >&2
  exit 2
fi
n=$1; shift
port=${LAUNCH_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
devices=${JAX_LOCAL_CPU_DEVICES:-1}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
for ((i = 0; i < n; i++)); do
  env JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" JAX_NUM_PROCESSES="$n" JAX_PROCESS_ID="$i" \
      JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" \
      XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$devices" \
      "$@" > >(if [[ -n "${LAUNCH_LOG_DIR:-}" ]]; then cat > "$LAUNCH_LOG_DIR/process_$i.log";
               else sed "s/^/[$i] /"; fi) 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do
  rc=0
  wait "$p" || rc=$?
  if [[ $rc -ne 0 && $status -eq 0 ]]; then status=$rc; cleanup; fi
done
pids=()
exit $status
