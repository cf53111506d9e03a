#!/usr/bin/env bash
# The README's first command: installs what is needed, starts a local Kafka broker (real Apache
# Kafka, from Maven Central jars), and runs `inferwatch demo` against it: synthetic inference events
# with a drift injected half way, alerts printed as they arrive on the alerts topic.
#
# Usage: bash scripts/demo.sh [--events N]    (KEEP_BROKER=1 leaves the broker running afterwards)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export INFERWATCH_KAFKA_RUN_DIR="${INFERWATCH_KAFKA_RUN_DIR:-$ROOT/.cache/kafka/demo-run}"
bootstrap="$(bash scripts/kafka-broker.sh start)"
if [[ "${KEEP_BROKER:-0}" != 1 ]]; then
    trap 'bash scripts/kafka-broker.sh stop >/dev/null 2>&1 || true' EXIT
fi
echo "Kafka broker at $bootstrap"
.venv/bin/inferwatch demo --bootstrap-servers "$bootstrap" --workdir "$ROOT/demo-out" "$@"
