#!/usr/bin/env bash
# Fetch the Apache Sedona jars pinned in conf/sedona-jars.lock from Maven Central and verify them.
# (Any other lock named <kind>-jars.lock works the same: scripts/fetch_delta_jars.sh passes
# conf/delta-jars.lock; the folder is then jars/<kind>-<version of its first *.<kind> group>.)
#
# Usage: scripts/fetch_sedona_jars.sh [--lock FILE] [--dest DIR] [--print-jars]
#
#   --lock FILE    lock file (default: conf/sedona-jars.lock next to this script's repo)
#   --dest DIR     target folder
#                  (default: ${BIGEARTHNET_CACHE:-$HOME/.cache/bigearthnet}/jars/sedona-<version>)
#   --print-jars   print the comma-separated jar paths (for spark.jars / --jars), not the folder
#
# Idempotent: a jar already in DIR whose SHA-256 matches the lock is kept without any network
# access, so a second run takes well under a second. A missing jar is fetched with
# `mvn -C dependency:copy` (Maven's strict checksums: the download must match Maven Central's
# .sha1), checked again against that .sha1 and against the lock's SHA-256, and only then renamed
# into place, so DIR never holds a partial or unverified jar. A cached jar whose SHA-256 differs
# from the lock is reported and fetched again. Exit status 1 on any mismatch or failed download.
# Nothing is ever written inside the repository.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCK="$ROOT/conf/sedona-jars.lock"
DEST=""
PRINT_JARS=0
MVN=${MVN:-mvn}
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

die() { echo "fetch_sedona_jars: ERROR: $*" >&2; exit 1; }
note() { echo "fetch_sedona_jars: $*" >&2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --lock) LOCK=${2:?--lock needs a file}; shift 2 ;;
        --dest) DEST=${2:?--dest needs a folder}; shift 2 ;;
        --print-jars) PRINT_JARS=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

[[ -f "$LOCK" ]] || die "lock file $LOCK does not exist"
KIND=$(basename "$LOCK" -jars.lock)   # sedona-jars.lock -> sedona

# Parse the lock: "group:artifact:version sha256 filename" per line; '#' starts a comment.
coords=(); sums=(); files=(); version=""
while read -r coord sum file extra; do
    [[ -z "${coord:-}" || "$coord" == \#* ]] && continue
    [[ -z "${extra:-}" && -n "${file:-}" ]] \
        || die "$LOCK: malformed line '$coord $sum $file $extra' (want: group:artifact:version sha256 filename)"
    IFS=: read -r group artifact ver rest <<<"$coord"
    [[ -n "$group" && -n "$artifact" && -n "$ver" && -z "$rest" ]] \
        || die "$LOCK: malformed coordinate '$coord' (want group:artifact:version)"
    [[ "$sum" =~ ^[0-9a-f]{64}$ ]] || die "$LOCK: '$sum' for $coord is not a lowercase SHA-256"
    [[ "$file" == "$artifact-$ver.jar" ]] || die "$LOCK: file name '$file' does not match $coord"
    [[ -z "$version" && "$group" == *."$KIND" ]] && version=$ver
    coords+=("$coord"); sums+=("$sum"); files+=("$file")
done <"$LOCK"
[[ ${#coords[@]} -gt 0 ]] || die "$LOCK pins no jar"
[[ -n "$version" ]] || die "$LOCK pins no *.$KIND artifact (e.g. org.apache.sedona)"

CACHE=${BIGEARTHNET_CACHE:-$HOME/.cache/bigearthnet}
DEST=${DEST:-$CACHE/jars/$KIND-$version}
case "$(cd "$(dirname "$DEST")" 2>/dev/null && pwd || echo "$DEST")/" in
    "$ROOT"/*) die "refusing to put jars inside the repository ($DEST); choose a folder outside $ROOT" ;;
esac
mkdir -p "$DEST"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

tmp=""
cleanup() {
    local rc=$?
    if [[ -n "$tmp" ]]; then rm -rf "$tmp"; fi
    exit "$rc"
}
trap cleanup EXIT

fetch() {  # fetch COORD FILE SHA256 -> verified DEST/FILE
    local coord=$1 file=$2 want=$3 group artifact ver got sha1_file sha1_want sha1_got
    command -v "$MVN" >/dev/null \
        || die "Maven ('$MVN') is not installed; it is needed to download $coord (apt-get install maven)"
    IFS=: read -r group artifact ver <<<"$coord"
    [[ -n "$tmp" ]] || tmp=$(mktemp -d "$DEST/.fetch.XXXXXX")
    local repo="$CACHE/m2"
    note "downloading $coord"
    # -C: strict checksums, Maven fails when the jar does not match Maven Central's .sha1.
    if ! "$MVN" -q -B -C -Dmaven.repo.local="$repo" "$DEPENDENCY_PLUGIN:copy" \
            -Dartifact="$coord:jar" -DoutputDirectory="$tmp" -Dmdep.overWriteReleases=true \
            >"$tmp/mvn.log" 2>&1; then
        cat "$tmp/mvn.log" >&2
        die "mvn could not download $coord (is Maven Central reachable, and is the version served?)"
    fi
    [[ -f "$tmp/$file" ]] || die "mvn did not produce $file for $coord"
    # Check Maven Central's .sha1 ourselves as well (Maven keeps it next to the jar).
    sha1_file="$repo/${group//.//}/$artifact/$ver/$file.sha1"
    [[ -f "$sha1_file" ]] || die "no .sha1 from Maven Central for $coord ($sha1_file)"
    sha1_want=$(tr -d '[:space:]' <"$sha1_file" | cut -c1-40)
    sha1_got=$(sha1sum "$tmp/$file" | cut -d' ' -f1)
    [[ "$sha1_got" == "$sha1_want" ]] \
        || die "SHA-1 mismatch for $file: Maven Central says $sha1_want, the download has $sha1_got"
    got=$(sha256_of "$tmp/$file")
    [[ "$got" == "$want" ]] \
        || die "SHA-256 mismatch for $file: $LOCK pins $want, the download from Maven" \
               "Central has $got. The jar was NOT installed. If the pin is wrong, fix the lock" \
               "(only after checking the jar)."
    mv -f "$tmp/$file" "$DEST/$file"   # same file system: an atomic rename
    # Maven's copy of the jar is no longer needed (the plugin stays cached for the next run).
    rm -rf "${repo:?}/${group//.//}/$artifact/$ver"
    note "verified $file (sha256 $want)"
}

for i in "${!coords[@]}"; do
    coord=${coords[$i]} file=${files[$i]} want=${sums[$i]}
    if [[ -f "$DEST/$file" ]]; then
        got=$(sha256_of "$DEST/$file")
        if [[ "$got" == "$want" ]]; then
            continue
        fi
        note "cached $DEST/$file has SHA-256 $got, but $LOCK pins $want: fetching it again"
        rm -f "$DEST/$file"
    fi
    fetch "$coord" "$file" "$want"
done

if [[ $PRINT_JARS == 1 ]]; then
    (IFS=,; paths=(); for f in "${files[@]}"; do paths+=("$DEST/$f"); done; echo "${paths[*]}")
else
    echo "$DEST"
fi
