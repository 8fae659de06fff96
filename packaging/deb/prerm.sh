#!/bin/sh
# molecule-agent prerm: on removal (not upgrade) stop and disable the
# agent, which stops every unit gracefully.
set -eu

if [ "${1:-}" = "remove" ] && [ -d /run/systemd/system ]; then
	systemctl stop molecule-agent.service >/dev/null 2>&1 || true
	systemctl disable molecule-agent.service >/dev/null 2>&1 || true
fi
exit 0
