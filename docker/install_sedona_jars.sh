#!/usr/bin/env bash
# Install the Sedona jars of a lock file (group:artifact:version sha256 filename per line) from
# Maven Central into a folder, checking each SHA-256. Used by docker/Dockerfile; on a machine
# with Maven, scripts/fetch_sedona_jars.sh does the same into a cache folder.
set -euo pipefail
lock=${1:?usage: install_sedona_jars.sh LOCK DEST}
dest=${2:?usage: install_sedona_jars.sh LOCK DEST}
repo=${MAVEN_REPOSITORY:-https://repo1.maven.org/maven2}
while read -r coord sum file _; do
    [[ -z "${coord:-}" || "$coord" == \#* ]] && continue
    IFS=: read -r group artifact version <<<"$coord"
    url="$repo/${group//.//}/$artifact/$version/$file"
    curl -fsSL "$url" -o "$dest/$file.part"
    echo "$sum  $dest/$file.part" | sha256sum -c --quiet -
    mv "$dest/$file.part" "$dest/$file"
done <"$lock"
