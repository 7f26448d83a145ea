#!/usr/bin/env bash
# Checks the public API of every published library crate against the
# baseline committed in public-api/ (one file per library, one item per
# line); `--bless` rewrites the baseline after an intended change.
#
# rustdoc's JSON output is unstable: RUSTC_BOOTSTRAP=1 lets the stable
# toolchain write it (format 57 with rustc 1.95; the checker's public-api
# version must read the format the toolchain writes). It is set for rustdoc
# alone (scripts/rustdoc-bootstrap as RUSTDOC): set for cargo, it would
# rebuild every build script that watches it (proc-macro2's) and all above.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
    ockam-rs-core:ockam_core
    ockam-rs-node:ockam_node
    ockam-rs-node-attribute:ockam_node_attribute
    ockam-rs-transport-tcp:ockam_transport_tcp
    ockam-rs-vault:ockam_vault
    ockam-rs-channel:ockam_channel
    ockam-rs-stream-client:ockam_stream_client
    ockam-rs-hub:ockam_hub
    ockam-rs-rpc:ockam_rpc
    ockam-rs:ockam
    ockam-rs-examples:ockam_get_started
)

target_dir=${CARGO_TARGET_DIR:-target}
libraries=()
for entry in "${packages[@]}"; do
    package=${entry%%:*}
    libraries+=("${entry#*:}")
    RUSTDOC="$PWD/scripts/rustdoc-bootstrap" cargo rustdoc --quiet -p "$package" --lib -- \
        -Z unstable-options --output-format json
done

cargo build --quiet --release --manifest-path scripts/public-api/Cargo.toml \
    --target-dir "$target_dir/public-api-check"
"$target_dir/public-api-check/release/ockam-rs-public-api-check" "$@" "$target_dir/doc" "${libraries[@]}"
