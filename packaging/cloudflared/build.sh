#!/bin/sh
# Builds the pinned cloudflared (the tool in this nested module's go.mod) with
# its release version stamped, so `cloudflared --version` reports it.
#
#   packaging/cloudflared/build.sh [OUTPUT]     default OUTPUT: <repo>/bin/cloudflared
#
# The version below must match the pseudo-version pinned in go.mod
# (v0.0.0-20260713102814-2601f87b5728 is cloudflared release 2026.7.1).
set -eu

VERSION=2026.7.1
BUILD_TIME="2026-07-13-10:28 UTC" # the pinned commit's time, for reproducible builds

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/bin/cloudflared}
case $out in /*) ;; *) out=$(pwd)/$out ;; esac
mkdir -p "$(dirname "$out")"

cd "$here"
# BuiltForPackageManager makes cloudflared refuse to update itself: the agent
# owns its version. CGO off gives a static binary for the AMI.
CGO_ENABLED=0 exec go build -trimpath \
	-ldflags "-X main.Version=$VERSION -X 'main.BuildTime=$BUILD_TIME' -X github.com/cloudflare/cloudflared/cmd/cloudflared/updater.BuiltForPackageManager=molecule-agent" \
	-o "$out" github.com/cloudflare/cloudflared/cmd/cloudflared
