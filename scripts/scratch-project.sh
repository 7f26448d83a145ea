#!/usr/bin/env bash
# A user's project outside this workspace: a fresh Cargo project that
# depends on our packages by path under their published names (ockam-rs,
# ockam-rs-examples), holding seed 000's and seed 001's programs exactly as
# the seeds write them (seed 000's placeholder hub address filled in, as its
# guide says to), built and run against a real hub on 127.0.0.1:4000.
#
# Seed 000 uses the hub's Kafka services: run this under
# scripts/with-kafka.sh (it reads OCKAM_KAFKA_BOOTSTRAP). Port 4000 must be
# free (seed 001's code names it). Exits non-zero when anything fails.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
seeds=${OCKAM_SEEDS:-$repo/../shared/seeds}
: "${OCKAM_KAFKA_BOOTSTRAP:?run under scripts/with-kafka.sh (seed 000 needs Kafka)}"

scratch=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$scratch"
}
trap cleanup EXIT

echo "--- a project of its own in $scratch, depending on ockam-rs and ockam-rs-examples by path"
mkdir -p "$scratch/examples" "$scratch/src"
cat > "$scratch/Cargo.toml" <<TOML
[package]
name = "seed-scratch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
ockam-rs = { path = "$repo/ockam" }
ockam-rs-examples = { path = "$repo/ockam_examples" }

# Not a member of the repository's workspace.
[workspace]

# The repository's dev profile, so that the build shares what it can with
# the repository's target directory.
[profile.dev]
debug = "line-tables-only"

[profile.dev.package."*"]
debug = false
TOML
echo 'fn main() {}' > "$scratch/src/main.rs"
# The repository's lock file: the same dependency versions its CI tested.
cp "$repo/Cargo.lock" "$scratch/Cargo.lock"

# Each full program of the seeds (a rust block with #[ockam::node]) under
# the name of the `touch examples/NAME.rs` line before it.
python3 - "$seeds" "$scratch/examples" <<'PY'
import glob, re, sys
seeds, out = sys.argv[1], sys.argv[2]
written = 0
for seed in ("000", "001"):
    [path] = glob.glob(f"{seeds}/{seed}_*.txt")
    text = open(path).read()
    for m in re.finditer(r"touch examples/([\w-]+)\.rs.*?```rust\n(.*?)```", text, re.S):
        name, code = m.group(1), m.group(2)
        if "#[ockam::node]" not in code:
            continue
        code = code.replace("<Your node Address copied from hub.ockam.network>", "127.0.0.1:4000")
        # Named after the seed too, so as not to overwrite the repository's
        # own examples of the same names in the shared target directory.
        open(f"{out}/seed{seed}-{name}.rs", "w").write(code)
        print(f"seed {seed}: examples/seed{seed}-{name}.rs")
        written += 1
if written != 4:
    sys.exit(f"expected 4 programs in seeds 000 and 001, found {written}")
PY

echo "--- building them"
target_dir=${CARGO_TARGET_DIR:-$repo/target}
CARGO_TARGET_DIR="$target_dir" cargo build --quiet --manifest-path "$scratch/Cargo.toml" --examples

echo "--- a hub on 127.0.0.1:4000 (memory store, Kafka at $OCKAM_KAFKA_BOOTSTRAP)"
(cd "$repo" && cargo build --quiet -p ockam-rs-hub --bin ockam_hub)
hub_bin=$target_dir/debug/ockam_hub
"$hub_bin" --listen 127.0.0.1:4000 --storage memory \
    --kafka-bootstrap-servers "$OCKAM_KAFKA_BOOTSTRAP" --kafka-prefix "scratch$$_" \
    > "$scratch/hub.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    grep -q "hub up" "$scratch/hub.log" && break
    sleep 0.2
done
grep -q "hub up" "$scratch/hub.log" || { cat "$scratch/hub.log"; echo "the hub did not start"; exit 1; }

# run_pair RESPONDER INITIATOR EXPECTED: the responder in the background,
# the initiator until it prints EXPECTED and exits (60 s at most).
run_pair() {
    local responder=$1 initiator=$2 expected=$3
    "$target_dir/debug/examples/$responder" > "$scratch/$responder.log" 2>&1 &
    local rpid=$!
    pids+=($rpid)
    local status=0
    timeout 60 "$target_dir/debug/examples/$initiator" > "$scratch/$initiator.log" 2>&1 || status=$?
    kill "$rpid" 2>/dev/null || true
    if [ "$status" -ne 0 ] || ! grep -q "$expected" "$scratch/$initiator.log"; then
        echo "FAILED: $initiator (exit $status) did not print \"$expected\""
        tail -20 "$scratch/$initiator.log" "$scratch/$responder.log" "$scratch/hub.log"
        exit 1
    fi
    echo "ok: $(grep -m1 "$expected" "$scratch/$initiator.log" | sed 's/.*\] //')"
}

run_pair seed000-14-streams-responder seed000-14-streams-initiator "Reply via stream: Hello World!"
run_pair seed001-14-secure-channel-over-stream-over-cloud-node-responder \
    seed001-14-secure-channel-over-stream-over-cloud-node-initiator \
    "Reply via secure channel via stream: Hello World!"
echo "seed 000 and seed 001 ran unchanged in a project outside the workspace"
