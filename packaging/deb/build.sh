#!/bin/sh
# Builds dist/molecule-agent_<version>_<arch>.deb with nfpm (pinned as a
# tool in this directory's go.mod).
#
#   packaging/deb/build.sh [VERSION]     default VERSION: from git describe
#
# BIN_DIR (default bin) holds molecule-agent and cloudflared; they are built
# there when missing (`make deb` builds them first). OUT_DIR (default dist)
# receives the package. Relative paths are relative to the repository.
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
BIN_DIR=${BIN_DIR:-bin}
OUT_DIR=${OUT_DIR:-dist}
case $BIN_DIR in /*) ;; *) BIN_DIR=$root/$BIN_DIR ;; esac
export VERSION ARCH

if [ ! -x "$BIN_DIR/molecule-agent" ]; then
	CGO_ENABLED=0 GOARCH=$ARCH go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$BIN_DIR/molecule-agent" ./agent/cmd/molecule-agent
fi
if [ ! -x "$BIN_DIR/cloudflared" ]; then
	GOARCH=$ARCH packaging/cloudflared/build.sh "$BIN_DIR/cloudflared"
fi

mkdir -p "$OUT_DIR"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go -C "$here" build -o "$tmp/nfpm" github.com/goreleaser/nfpm/v2/cmd/nfpm
# The recipe names bin/; point it at BIN_DIR.
sed "s#src: bin/#src: $BIN_DIR/#" packaging/deb/nfpm.yaml >"$tmp/nfpm.yaml"
"$tmp/nfpm" package --config "$tmp/nfpm.yaml" --packager deb --target "$OUT_DIR/"
