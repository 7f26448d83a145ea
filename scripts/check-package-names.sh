#!/usr/bin/env bash
# Checks that every package of the workspace (and fuzz/) has a name that is
# ours to publish: either listed in scripts/crates-io-owned.txt (names this
# project has published on crates.io) or free there. crates.io treats `-` and
# `_` as the same name, so both spellings are asked. Exits non-zero when a
# name is taken by someone else or crates.io cannot be asked.
set -euo pipefail
cd "$(dirname "$0")/.."

owned_file=scripts/crates-io-owned.txt
mapfile -t owned < <(grep -v '^\s*#' "$owned_file" | grep -v '^\s*$' || true)

names=$(
    { cargo metadata --format-version 1 --no-deps
      cargo metadata --format-version 1 --no-deps --manifest-path fuzz/Cargo.toml; } |
    python3 -c 'import json,sys
for line in sys.stdin:
    for p in json.loads(line)["packages"]:
        print(p["name"])' | sort -u
)

# Asked from outside the workspace: inside it, `cargo info` describes the
# local package of that name instead of the registry's.
outside=$(mktemp -d)
trap 'rm -rf "$outside"' EXIT

status=0
for name in $names; do
    if printf '%s\n' "${owned[@]}" | grep -qx "$name"; then
        echo "ours:  $name"
        continue
    fi
    for spelling in "$name" "${name//-/_}"; do
        out=$(cd "$outside" && cargo info --quiet "$spelling" 2>&1) && {
            echo "TAKEN: $name (crates.io has \`$spelling\`, not listed in $owned_file)"
            echo "$out" | head -3
            status=1
            continue 2
        }
        if ! grep -q "could not find" <<<"$out"; then
            echo "cannot ask crates.io about $spelling:"
            echo "$out"
            exit 2
        fi
    done
    echo "free:  $name"
done
exit $status
