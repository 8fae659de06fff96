#!/bin/sh
# molecule-agent postinst: reload unit files, nothing more. It never
# enables or starts the agent: `molecule-agent bootstrap` (EC2 user-data)
# does that with the host's parameters. No shell tracing: nothing here
# should reach a console log.
set -eu

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	if systemctl is-active --quiet molecule-agent.service; then
		echo "molecule-agent: upgraded; the running agent keeps the old binary until 'systemctl restart molecule-agent'"
	fi
fi
exit 0
