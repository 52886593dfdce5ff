#!/usr/bin/env bash
# Draws docs/src/images/machine-temperature.svg, the chart in docs/src/sql.md: NAB's machine
# temperature (vigil-guard's built-in dataset) with the alerts vigil-guard raises on it, charted
# by vigil-sql. Debug builds, a temporary archive; run from anywhere in the repository.
set -euo pipefail

cd "$(dirname "$0")/.."
cargo build -p vigil-pipelines -p vigil-sql --bins
bin="${CARGO_TARGET_DIR:-target}/debug"

archive="$(mktemp -d)"
trap 'rm -rf "$archive"' EXIT

# The default input is the built-in NAB dataset; only the archive is wanted here. The
# composite guard is the one measured against NAB (docs/src/performance.md); its alerts last
# hours, where the default z-score's last minutes.
"$bin/vigil-guard" --archive "$archive" --replica none --alerts none --no-progress \
  --guard composite

# An alert's raise and its clear share its alert_id; an alert still open has no clear (NULL).
"$bin/vigil-sql" --archive "$archive" --chart docs/src/images/machine-temperature.svg \
  --chart-title "NAB machine temperature, with vigil-guard's composite alerts" \
  --chart-alerts "SELECT min(ts) FILTER (WHERE status = 'raised') AS raised,
                         max(ts) FILTER (WHERE status = 'cleared') AS cleared
                  FROM alerts
                  WHERE source = 'nab' AND name = 'machine_temperature_system_failure'
                  GROUP BY alert_id" \
  "SELECT ts, value AS temperature FROM telemetry
   WHERE source = 'nab' AND name = 'machine_temperature_system_failure' ORDER BY ts"
