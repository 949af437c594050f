#!/usr/bin/env bash
# Ensure Java >= 17 for Spark. Installs openjdk-17-jre-headless when root on Debian/Ubuntu.
set -euo pipefail
java_major() {
    java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}' | awk -F. '{ if ($1 == "1") print $2; else print $1 }'
}
if command -v java >/dev/null 2>&1; then
    major=$(java_major || echo 0)
    if [ "${major:-0}" -ge 17 ] 2>/dev/null; then
        exit 0
    fi
    echo "check_java: found Java ${major:-unknown}, Spark 4.1 needs Java >= 17" >&2
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "check_java: installing openjdk-17-jre-headless" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
    exit 0
fi
echo "check_java: Java >= 17 is required by Spark. Install a JDK/JRE 17 (e.g. 'apt-get install openjdk-17-jre-headless') and re-run 'make setup'." >&2
exit 1
