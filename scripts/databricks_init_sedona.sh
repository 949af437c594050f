#!/bin/bash
# Databricks cluster init script: puts the Apache Sedona jars that `make setup` pins
# (conf/sedona-jars.lock) on the cluster's class path, /databricks/jars/, before Spark starts, so
# the cluster's Spark conf can load Sedona's SQL extensions (README, "Databricks").
#
# Where the jars come from (the first that is set):
#   BIGEARTHNET_SEDONA_JARS_DIR  a folder holding the two jars, e.g. a Unity Catalog volume
#                                /Volumes/<catalog>/<schema>/<volume>/jars/sedona-1.8.0 that you
#                                filled from `scripts/fetch_sedona_jars.sh` (verified download);
#   BIGEARTHNET_MAVEN_REPO       the base URL of a Maven repository that serves them (Maven
#                                Central or your mirror): <repo>/<group path>/<artifact>/<version>/.
# Set them as the cluster's environment variables (databricks.yml: spark_env_vars).
# Every jar is checked against its SHA-256 below before it is installed; a mismatch or a
# missing jar fails the init script, and with it the cluster start (no half-installed Sedona).
#
# The JAR lines between the markers are conf/sedona-jars.lock's pins, verbatim
# (tests/databricks/test_bundle.py checks it, and runs this script).
set -euo pipefail

TARGET=${BIGEARTHNET_DATABRICKS_JARS:-/databricks/jars}
SOURCE_DIR=${BIGEARTHNET_SEDONA_JARS_DIR:-}
REPO=${BIGEARTHNET_MAVEN_REPO:-}

die() { echo "databricks_init_sedona: ERROR: $*" >&2; exit 1; }

[[ -n "$SOURCE_DIR" || -n "$REPO" ]] \
    || die "set BIGEARTHNET_SEDONA_JARS_DIR (a folder with the Sedona jars) or BIGEARTHNET_MAVEN_REPO (a Maven repository URL) in the cluster's environment"
mkdir -p "$TARGET"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

install_jar() {  # install_jar group:artifact:version sha256 filename
    local coord=$1 want=$2 file=$3 group artifact version got
    IFS=: read -r group artifact version <<<"$coord"
    if [[ -n "$SOURCE_DIR" ]]; then
        [[ -f "$SOURCE_DIR/$file" ]] || die "$SOURCE_DIR/$file does not exist (copy the jars of scripts/fetch_sedona_jars.sh there)"
        cp "$SOURCE_DIR/$file" "$tmp/$file"
    else
        curl -fsSL --retry 3 -o "$tmp/$file" "${REPO%/}/${group//.//}/$artifact/$version/$file" \
            || die "cannot download $coord from $REPO"
    fi
    got=$(sha256sum "$tmp/$file" | cut -d' ' -f1)
    [[ "$got" == "$want" ]] || die "$file has SHA-256 $got, but the pin is $want; not installed"
    mv "$tmp/$file" "$TARGET/$file"
    echo "databricks_init_sedona: installed $file (sha256 $want)"
}

while read -r coord sha file; do
    [[ -z "$coord" || "$coord" == \#* ]] && continue
    install_jar "$coord" "$sha" "$file"
done <<'JARS'
# --- conf/sedona-jars.lock pins (begin) ---
org.apache.sedona:sedona-spark-shaded-4.0_2.13:1.8.0 c847cec67cd06b43c7a2f67086fa56fd6044564a539128e598cf68262fe53a2f sedona-spark-shaded-4.0_2.13-1.8.0.jar
org.datasyslab:geotools-wrapper:1.8.0-33.1 64d7b8296ded315e97fe90af1d40be6c24203603d952d06a093ef3470fa4cfca geotools-wrapper-1.8.0-33.1.jar
# --- conf/sedona-jars.lock pins (end) ---
JARS
