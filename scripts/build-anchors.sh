#!/usr/bin/env bash
# Builds the comparison programs of ../shared/anchors (see its README) into
# target/anchors/<name>/, where the benchmarks look for them. tonic needs
# protoc (Debian: protobuf-compiler). Usage: scripts/build-anchors.sh [name...]
set -euo pipefail
cd "$(dirname "$0")/.."
anchors=${ANCHORS_DIR:-../shared/anchors}
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(rawtcp tonic ockam2021 ockam2024)
if [[ " ${names[*]} " == *" tonic "* ]] && ! command -v protoc >/dev/null; then
  echo "tonic needs protoc: apt-get install -y protobuf-compiler" >&2
  exit 1
fi
for name in "${names[@]}"; do
  echo "building anchor $name"
  # A copy, so that nothing is written into the shared folder.
  work=target/anchors/src/$name
  rm -rf "$work" && mkdir -p "$work" && cp -r "$anchors/$name/." "$work/"
  cargo build --release --locked --manifest-path "$work/Cargo.toml" \
    --target-dir "target/anchors/$name"
done
