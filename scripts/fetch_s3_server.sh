#!/usr/bin/env bash
# Build the pinned S3-compatible server the S3 tests run against (Versity S3 Gateway).
#
# Usage: scripts/fetch_s3_server.sh [--print-path]
#
#   --print-path   print only the binary's path
#
# versitygw serves the S3 API over a plain folder (its `posix` backend); tests/s3/conftest.py
# starts it on 127.0.0.1 with a free port. It is built with `go install` through the Go module
# proxy at the exact version below, into
# ${BIGEARTHNET_CACHE:-$HOME/.cache/bigearthnet}/go (GOPATH) and copied to
# .../bin/versitygw-<version>. A cached binary whose embedded module version matches is kept
# without any network access. Go >= 1.21 is needed (it fetches the toolchain versitygw's go.mod
# asks for through the same proxy). Nothing is written inside the repository.
set -euo pipefail

VERSION=v1.8.0
MODULE=github.com/versity/versitygw
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BIGEARTHNET_CACHE:-$HOME/.cache/bigearthnet}
GOPATH_DIR=$CACHE/go
BIN=$CACHE/bin/versitygw-$VERSION
PRINT_PATH=0

die() { echo "fetch_s3_server: ERROR: $*" >&2; exit 1; }
note() { echo "fetch_s3_server: $*" >&2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --print-path) PRINT_PATH=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

case "$CACHE/" in
    "$ROOT"/*) die "refusing to build inside the repository ($CACHE); set BIGEARTHNET_CACHE outside $ROOT" ;;
esac

built_version() {  # the module version embedded in a Go binary, or nothing
    command -v go >/dev/null || return 0
    go version -m "$1" 2>/dev/null | awk -v m="$MODULE" '$1 == "mod" && $2 == m { print $3 }'
}

if [[ -x "$BIN" ]] && { ! command -v go >/dev/null || [[ "$(built_version "$BIN")" == "$VERSION" ]]; }; then
    [[ $PRINT_PATH == 1 ]] && echo "$BIN"
    exit 0
fi

command -v go >/dev/null || die "Go is not installed; it is needed to build $MODULE@$VERSION \
(install Go >= 1.21 from https://go.dev/dl or apt-get install golang-go)"
note "building $MODULE/cmd/versitygw@$VERSION (go install through the module proxy, about a minute)"
mkdir -p "$GOPATH_DIR" "$CACHE/bin"
GOPATH=$GOPATH_DIR GOFLAGS=-modcacherw GOBIN=$GOPATH_DIR/bin \
    go install "$MODULE/cmd/versitygw@$VERSION" \
    || die "go install $MODULE/cmd/versitygw@$VERSION failed (is the Go module proxy reachable?)"
got=$(built_version "$GOPATH_DIR/bin/versitygw")
[[ "$got" == "$VERSION" ]] || die "the built versitygw reports module version '$got', expected $VERSION"
cp "$GOPATH_DIR/bin/versitygw" "$BIN.tmp.$$"
mv -f "$BIN.tmp.$$" "$BIN"   # same folder: an atomic rename, never a partial binary
note "built $BIN"
[[ $PRINT_PATH == 1 ]] && echo "$BIN"
exit 0
