#!/usr/bin/env bash
# Runs a command with a real Kafka-compatible broker beside it, for the
# Kafka back end's tests and benchmark:
#
#   scripts/with-kafka.sh cargo test --workspace           # every test
#   scripts/with-kafka.sh cargo test -p ockam-rs-hub --test kafka
#   scripts/with-kafka.sh cargo bench -p ockam-rs-hub --bench kafka_throughput
#
# Installs what is missing (the `tansu` broker from crates.io, about 13
# minutes on 2 cores, once; the kafka-python module from PyPI), starts tansu
# on a free 127.0.0.1 port with SQLite storage in a temporary directory,
# exports OCKAM_KAFKA_BOOTSTRAP (the broker) and OCKAM_KAFKA_REQUIRED=1 (a
# Kafka test that cannot run fails instead of skipping), runs the command,
# stops the broker, and exits with the command's status.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION=0.6.0
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
export PATH="$cargo_bin:$PATH"

if ! command -v tansu >/dev/null || ! tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    echo "with-kafka: installing tansu $TANSU_VERSION (a Kafka-compatible broker; once, ~13 min)" >&2
    cargo install --locked "tansu@$TANSU_VERSION" --features dynostore,libsql
fi
if ! python3 -c 'import kafka' 2>/dev/null; then
    echo "with-kafka: installing kafka-python" >&2
    python3 -m pip install --quiet 'kafka-python>=2.2,<4'
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
data=$(mktemp -d)
mkdir "$data/db"
# tansu opens a SQLite path relative to its working directory.
(cd "$data" && exec tansu broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "sqlite://db/broker.db" \
    >"$data/broker.log" 2>&1) &
broker=$!
stop_broker() {
    kill "$broker" 2>/dev/null || true
    wait "$broker" 2>/dev/null || true
    rm -rf "$data"
}
trap stop_broker EXIT

for _ in $(seq 1 300); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$broker" 2>/dev/null; then
        echo "with-kafka: the broker exited:" >&2
        cat "$data/broker.log" >&2
        exit 1
    fi
    sleep 0.1
done
echo "with-kafka: tansu $TANSU_VERSION on 127.0.0.1:$port" >&2

export OCKAM_KAFKA_BOOTSTRAP="127.0.0.1:$port"
export OCKAM_KAFKA_REQUIRED=1
status=0
"$@" || status=$?
exit "$status"
