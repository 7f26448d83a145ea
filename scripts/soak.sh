#!/usr/bin/env bash
# The full soak (issue 18): 30 minutes of producers and consumers through a
# hub that is killed with kill -9 at random moments while network faults
# come and go (ockam_hub/tests/soak.rs; `cargo test` runs a 3-minute one).
# Usage: scripts/soak.sh [seconds] ; OCKAM_SOAK_SEED replays a schedule.
# The RSS curve goes to target/soak-rss.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
export OCKAM_SOAK_SECS=${1:-1800}
export OCKAM_SOAK_CSV=${OCKAM_SOAK_CSV:-$PWD/target/soak-rss.csv}
cargo test --release -p ockam-rs-hub --test soak -- --nocapture
echo "RSS curve: $OCKAM_SOAK_CSV"
