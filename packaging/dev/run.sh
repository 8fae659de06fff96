#!/usr/bin/env bash
# `make run`: the whole system on one machine. The control plane on SQLite
# (`molecule-controlplane dev`) and one agent enrolled with it, supervising
# the demo units in packaging/dev/demo.yaml. Ctrl-C stops both.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dev=/tmp/molecule-dev
mkdir -p "$dev/cp"

"$root/bin/molecule-controlplane" dev --dir "$dev/cp" --listen 127.0.0.1:7070 > "$dev/cp.out" 2> "$dev/controlplane.log" &
cp=$!
agent=
cleanup() {
	[ -n "$agent" ] && kill -TERM "$agent" 2>/dev/null && wait "$agent" 2>/dev/null
	kill -TERM "$cp" 2>/dev/null && wait "$cp" 2>/dev/null
	true
}
trap cleanup EXIT
trap 'exit 0' INT TERM
for _ in $(seq 1 100); do grep -q '^control plane: ' "$dev/cp.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^control plane: //p' "$dev/cp.out")
[ -n "$url" ] || { echo "control plane did not start:"; cat "$dev/controlplane.log"; exit 1; }

"$root/bin/molecule-agent" run --config "$root/packaging/dev/demo.yaml" > "$dev/agent.log" 2>&1 &
agent=$!
for _ in $(seq 1 100); do [ -S "$dev/run/agent.sock" ] && break; sleep 0.1; done
sleep 1

echo "control plane:  $url   (admin token in $dev/cp/admin-token)"
[ -n "$(sed -n 's/^dashboard: //p' "$dev/cp.out")" ] && echo "dashboard:      $(sed -n 's/^dashboard: //p' "$dev/cp.out")"
echo "agent status:   $root/bin/molecule-agent status --socket $dev/run/agent.sock"
echo "logs:           $dev/agent.log  $dev/controlplane.log"
echo
"$root/bin/molecule-agent" status --socket "$dev/run/agent.sock"
echo
echo "Ctrl-C to stop."
wait "$agent"
