#!/usr/bin/env bash
# Fetch the JVM parts of the Kafka tests (deploy/kafka/pom.xml) into a cache the tests reuse:
#   $SENDTIME_JARS_DIR (default ~/.cache/sendtime/jars)/kafka-4.4.0/                                broker + Connect classpath
#   $SENDTIME_JARS_DIR/debezium-3.6.1.Final/debezium-connector-postgres/                          a Connect plugin.path entry
# Idempotent and fast when cached: a folder is complete when its .complete file holds the pom's
# checksum (and this script's), so editing either refetches. Maven caches the downloads in ~/.m2 as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
POM=deploy/kafka/pom.xml
JARS="${SENDTIME_JARS_DIR:-$HOME/.cache/sendtime/jars}"
KAFKA_VERSION=4.4.0
DEBEZIUM_VERSION=3.6.1.Final
SUM="$(cat "$POM" "$0" | sha256sum | cut -d' ' -f1)"  # the pom and this script: either changes the jars

if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> apt-get install openjdk-17-jre-headless maven" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless maven >/dev/null
  else
    echo "fetch-jars: java and mvn are needed (install openjdk-17 and maven)" >&2
    exit 1
  fi
fi

fetch() {  # profile, target folder, extra copy-dependencies flags
  local profile="$1" dest="$2"; shift 2
  if [ -f "$dest/.complete" ] && [ "$(cat "$dest/.complete")" = "$SUM" ]; then
    return 0
  fi
  echo "==> fetching $profile jars into $dest" >&2
  local tmp="$dest.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$(dirname "$dest")"
  if ! mvn -q -B -Dstyle.color=never -f "$POM" -P "$profile" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" "$@" > "$tmp.log" 2>&1; then
    cat "$tmp.log" >&2
    echo "fetch-jars: mvn failed for profile $profile (Maven Central reachable? see above)" >&2
    exit 1
  fi
  rm -f "$tmp.log"
  echo "$SUM" > "$tmp/.complete"
  rm -rf "$dest"
  mv "$tmp" "$dest"  # a folder appears whole or not at all
}

fetch server "$JARS/kafka-$KAFKA_VERSION"
# The plugin keeps the kafka-clients it was built with (4.3.0): Connect loads org.apache.kafka classes
# from the worker first and falls back to the plugin folder, and Debezium 3.6.1 needs
# o.a.k.common.utils.Sanitizer, which Kafka 4.4 moved to ...utils.internals (NoClassDefFoundError
# at task start without it). slf4j comes from the worker.
fetch debezium "$JARS/debezium-$DEBEZIUM_VERSION/debezium-connector-postgres" -DexcludeGroupIds=org.slf4j
