#!/usr/bin/env bash
# `make run`: the whole system on one machine. Starts the control plane (if
# built) and one agent supervising the demo units; Ctrl-C stops everything.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dev=/tmp/molecule-dev
mkdir -p "$dev"
cfg="$root/packaging/dev/demo.yaml"

"$root/bin/molecule-agent" run --config "$cfg" > "$dev/agent.log" 2>&1 &
agent=$!
trap 'kill -TERM $agent 2>/dev/null; wait $agent 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 50); do [ -S "$dev/run/agent.sock" ] && break; sleep 0.1; done
echo "agent log:      $dev/agent.log"
echo "agent status:   $root/bin/molecule-agent status --socket $dev/run/agent.sock"
echo
"$root/bin/molecule-agent" status --socket "$dev/run/agent.sock"
echo
echo "Ctrl-C to stop."
wait $agent
