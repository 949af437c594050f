#!/usr/bin/env bash
# Fetch the Delta Lake jars pinned in conf/delta-jars.lock from Maven Central and verify them
# (SHA-1 from Maven Central and the lock's SHA-256), into
# ${BIGEARTHNET_CACHE:-$HOME/.cache/bigearthnet}/jars/delta-<version>/.
#
# Usage: scripts/fetch_delta_jars.sh [--dest DIR] [--print-jars]
#
# The same verified, idempotent download as scripts/fetch_sedona_jars.sh (which it runs with
# this lock); nothing is written inside the repository.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec "$ROOT/scripts/fetch_sedona_jars.sh" --lock "$ROOT/conf/delta-jars.lock" "$@"
