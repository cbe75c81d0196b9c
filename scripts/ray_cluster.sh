#!/usr/bin/env bash
# A Ray cluster for vLLM over several hosts, then `qwen-stream serve --backend vllm` on the head.
#   bash scripts/ray_cluster.sh head [PORT]          on the head host (default port 6379)
#   bash scripts/ray_cluster.sh worker HEAD_IP[:PORT] on every other host
#   bash scripts/ray_cluster.sh status | stop
#   bash scripts/ray_cluster.sh local                two Ray nodes on this host over loopback (a rehearsal)
# Then, on the head, with the model at the same path on every host (a shared QWEN_STREAM_CACHE, or a hub id in
# each host's HF cache):
#   .venv-vllm/bin/qwen-stream serve --backend vllm -c MODEL --host 0.0.0.0 --api-key KEY \
#       --tensor-parallel-size GPUS_PER_HOST --pipeline-parallel-size HOSTS --distributed-executor-backend ray
# Every host runs the same .venv-vllm (EXTRAS=...,vllm,ray bash scripts/install.sh). Set VLLM_HOST_IP (and for
# NCCL/Gloo, NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME) when a host has several network interfaces.
set -euo pipefail
cd "$(dirname "$0")/.."
ray=.venv-vllm/bin/ray
[ -x "$ray" ] || { echo "no $ray: install with EXTRAS=vllm,ray bash scripts/install.sh" >&2; exit 2; }
here_ip() { hostname -I 2>/dev/null | awk '{print $1}'; }

case "${1:-}" in
  head)
    port="${2:-6379}"
    ip="${VLLM_HOST_IP:-$(here_ip)}"
    VLLM_HOST_IP="$ip" "$ray" start --head --node-ip-address "$ip" --port "$port" --dashboard-host 127.0.0.1
    echo "Head at $ip:$port. On each worker: bash scripts/ray_cluster.sh worker $ip:$port"
    ;;
  worker)
    address="${2:?usage: ray_cluster.sh worker HEAD_IP[:PORT]}"
    [[ "$address" == *:* ]] || address="$address:6379"
    ip="${VLLM_HOST_IP:-$(here_ip)}"
    VLLM_HOST_IP="$ip" "$ray" start --address "$address" --node-ip-address "$ip"
    ;;
  local)
    # Two raylets on one host: the head with one CPU, a worker with one CPU, both on 127.0.0.1.
    "$ray" start --head --node-ip-address 127.0.0.1 --port 6379 --num-cpus 1 --include-dashboard false \
      --disable-usage-stats
    "$ray" start --address 127.0.0.1:6379 --node-ip-address 127.0.0.1 --num-cpus 1 --disable-usage-stats
    "$ray" status --address 127.0.0.1:6379
    echo "Serve with: RAY_ADDRESS=127.0.0.1:6379 VLLM_HOST_IP=127.0.0.1 .venv-vllm/bin/qwen-stream serve" \
         "--backend vllm -c MODEL --tensor-parallel-size 2 --distributed-executor-backend ray"
    ;;
  status)
    "$ray" status
    ;;
  stop)
    "$ray" stop
    ;;
  *)
    sed -n 2,13p "$0" >&2
    exit 2
    ;;
esac
