#!/bin/sh
# Builds dist/molecule-agent_<version>_<arch>.deb with nfpm (pinned as a
# tool in this directory's go.mod).
#
#   packaging/deb/build.sh [VERSION]     default VERSION: from git describe
#
# It builds bin/molecule-agent and bin/cloudflared (the pinned build) when
# they are missing; `make deb` builds them first.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

VERSION=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo 0.0.0)}
# Debian versions must start with a digit.
case $VERSION in
[0-9]*) ;;
v[0-9]*) VERSION=${VERSION#v} ;;
*) VERSION=0.0.0+$VERSION ;;
esac
ARCH=${ARCH:-$(go env GOARCH)}
export VERSION ARCH

if [ ! -x bin/molecule-agent ]; then
	CGO_ENABLED=0 GOARCH=$ARCH go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o bin/molecule-agent ./agent/cmd/molecule-agent
fi
if [ ! -x bin/cloudflared ]; then
	GOARCH=$ARCH packaging/cloudflared/build.sh bin/cloudflared
fi

mkdir -p dist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go -C "$here" build -o "$tmp/nfpm" github.com/goreleaser/nfpm/v2/cmd/nfpm
"$tmp/nfpm" package --config packaging/deb/nfpm.yaml --packager deb --target dist/
