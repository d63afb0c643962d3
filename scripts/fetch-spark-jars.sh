#!/usr/bin/env bash
# The Delta Lake jars of warehouse = "spark" (docs/models.md "Spark"), from Maven Central through
# deploy/spark/pom.xml, into a cache folder the Spark session puts on its classpath (spark.jars).
# Idempotent: does nothing when the folder already holds the jars of the current pom (a stamp file
# records the pom's checksum); otherwise copies into a fresh folder and swaps it in, so a killed
# run never leaves half a set. Maven itself caches downloads in ~/.m2.
#   SENDTIME_SPARK_JARS_DIR  the folder (default ~/.cache/sendtime/jars/spark)
set -euo pipefail
cd "$(dirname "$0")/.."
POM=deploy/spark/pom.xml
DEST="${SENDTIME_SPARK_JARS_DIR:-$HOME/.cache/sendtime/jars/spark}"
STAMP="$(sha256sum "$POM" | cut -d' ' -f1)"

if [ -f "$DEST/.pom-sha256" ] && [ "$(cat "$DEST/.pom-sha256")" = "$STAMP" ] \
    && compgen -G "$DEST/delta-spark_*.jar" >/dev/null && compgen -G "$DEST/delta-storage-*.jar" >/dev/null; then
  exit 0
fi
command -v mvn >/dev/null 2>&1 || { echo "==> fetch-spark-jars: Maven (mvn) is missing: apt-get install -y maven" >&2; exit 1; }

echo "==> fetching the Delta Lake jars into $DEST" >&2
mkdir -p "$(dirname "$DEST")"
TMP="$(mktemp -d "$(dirname "$DEST")/.spark-jars.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
mvn -q -B -f "$POM" dependency:copy-dependencies -DoutputDirectory="$TMP" -DincludeScope=runtime
echo "$STAMP" > "$TMP/.pom-sha256"
chmod 755 "$TMP"
rm -rf "$DEST.old"
[ -d "$DEST" ] && mv "$DEST" "$DEST.old"
mv "$TMP" "$DEST"
rm -rf "$DEST.old"
trap - EXIT
ls "$DEST"/*.jar >&2
