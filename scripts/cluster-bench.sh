#!/usr/bin/env bash
# Measures a cluster on this machine as docs/PERFORMANCE.md reports it: three nats-servers
# (JetStream, routed to each other, streams of three replicas), NODES nodes of `presence node`
# and `presence cluster-load`, all on loopback; prints cluster-load's figures and the CPU
# seconds the nodes and the nats-servers spent per million commands answered (logins
# included). Everything it starts is in a temporary directory and killed on exit.
#
#   scripts/cluster-bench.sh [NODES] [CLIENTS] [DURATION_S] [USERS]
#
# Build first: cargo build --release -p presence-cli
set -euo pipefail
nodes=${1:-3}
clients=${2:-64}
duration=${3:-15}
users=${4:-10000}
root=$(cd "$(dirname "$0")/.." && pwd)
presence=$root/target/release/presence
[ -x "$presence" ] || { echo "build first: cargo build --release -p presence-cli" >&2; exit 2; }
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client_ports=() cluster_ports=() http_ports=()
for i in 0 1 2; do client_ports+=("$(free_port)"); cluster_ports+=("$(free_port)"); http_ports+=("$(free_port)"); done
nats_pids=()
for i in 0 1 2; do
    mkdir -p "$dir/n$i"
    routes=""
    for j in 0 1 2; do
        [ "$j" = "$i" ] || routes="$routes nats-route://127.0.0.1:${cluster_ports[$j]}"
    done
    cat >"$dir/n$i/nats.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:${client_ports[$i]}
http: 127.0.0.1:${http_ports[$i]}
jetstream { store_dir: "$dir/n$i/js" }
cluster { name: bench, listen: 127.0.0.1:${cluster_ports[$i]}, routes: [$(echo $routes | tr ' ' ',')] }
EOF
    nats-server -c "$dir/n$i/nats.conf" >"$dir/n$i/log" 2>&1 &
    pids+=($!) nats_pids+=($!)
done
url="nats://127.0.0.1:${client_ports[0]},nats://127.0.0.1:${client_ports[1]},nats://127.0.0.1:${client_ports[2]}"
echo '{"deployment": "bench", "shards": 12, "replicas": 3, "node_timeout_ms": 3000}' >"$dir/node.json"
sleep 3
node_pids=()
for n in $(seq 1 "$nodes"); do
    "$presence" node --nats "$url" --node-id "node$n" --config "$dir/node.json" >"$dir/node$n.log" 2>&1 &
    pids+=($!) node_pids+=($!)
done
sleep 8

cpu() { # user+system clock ticks of the given processes
    local total=0
    for pid in "$@"; do
        read -r -a f <"/proc/$pid/stat"
        total=$((total + f[13] + f[14]))
    done
    echo "$total"
}
hz=$(getconf CLK_TCK)
msgs() { # messages the nats-servers received, summed (their monitoring endpoint)
    for port in "${http_ports[@]}"; do
        python3 -c "import json,urllib.request; print(json.load(urllib.request.urlopen('http://127.0.0.1:$port/varz'))['in_msgs'])"
    done | python3 -c "import sys; print(sum(int(line) for line in sys.stdin))"
}
# What the cluster costs doing nothing (following the streams, heartbeats), over 5 s.
idle_before=$(cpu "${node_pids[@]}" "${nats_pids[@]}")
sleep 5
idle=$(( $(cpu "${node_pids[@]}" "${nats_pids[@]}") - idle_before ))
echo "idle: $(python3 -c "print(f'{$idle / $hz / 5:.3f}')") CPU-seconds per second (nodes and nats-servers)"
nodes_before=$(cpu "${node_pids[@]}") nats_before=$(cpu "${nats_pids[@]}") msgs_before=$(msgs)
# PERF_OUT=FILE: a CPU profile of the first node and the first nats-server during the load.
if [ -n "${PERF_OUT:-}" ]; then
    perf record -F 499 -g -o "$PERF_OUT" -p "${node_pids[0]},${nats_pids[0]}" -- sleep "$duration" >/dev/null 2>&1 &
fi
out=$("$presence" cluster-load --nats "$url" --deployment bench --users "$users" --clients "$clients" \
    --duration-s "$duration" --json)
nodes_after=$(cpu "${node_pids[@]}") nats_after=$(cpu "${nats_pids[@]}") msgs_after=$(msgs)
echo "$out"
python3 - "$out" "$hz" $((nodes_after - nodes_before)) $((nats_after - nats_before)) $((msgs_after - msgs_before)) <<'EOF'
import json, sys
out, hz = json.loads(sys.argv[1]), int(sys.argv[2])
nodes_s, nats_s, msgs = int(sys.argv[3]) / hz, int(sys.argv[4]) / hz, int(sys.argv[5])
answered = out["logins"] + out["commands"]
per = lambda s: s / answered * 1e6
print(f"{out['nodes']} nodes, {out['clients']} clients: {out['commands_per_s']:.0f} commands/s, "
      f"p50 {out['latency_ms']['p50']:.2f} ms, p99 {out['latency_ms']['p99']:.2f} ms; "
      f"CPU-seconds per million commands: nodes {per(nodes_s):.1f} + nats-servers {per(nats_s):.1f} "
      f"= {per(nodes_s + nats_s):.1f}; {msgs / answered:.2f} messages into the nats-servers per command "
      f"({answered} answered, refused {out['refused']}, unavailable {out['unavailable']})")
EOF
