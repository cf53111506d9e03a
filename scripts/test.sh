#!/usr/bin/env bash
# The project's test command: setup (venv + pinned deps), then ruff, mypy and pytest. All three checks run even
# if one fails; the exit code is non-zero if any failed. Extra arguments go to pytest.
#
# Usage: scripts/test.sh [pytest args...]
#   scripts/test.sh                      everything (the Kafka tests start their own broker; see tests/conftest.py)
#   scripts/test.sh tests/test_broker.py -x
#   scripts/test.sh -m 'not kafka'       skip the tests that need the real broker
#   INFERWATCH_BOOTSTRAP=127.0.0.1:9092 scripts/test.sh   use an already running broker instead
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh

BIN="$ROOT/.venv/bin"
failed=()

step() { # step <name> <command...>
    local name=$1 start=$SECONDS rc=0
    shift
    printf '\n==> %s\n' "$name" >&2
    "$@" || rc=$?
    if ((rc != 0)); then
        failed+=("$name")
        printf '==> %s FAILED (exit %d, %d s)\n' "$name" "$rc" "$((SECONDS - start))" >&2
    else
        printf '==> %s ok (%d s)\n' "$name" "$((SECONDS - start))" >&2
    fi
}

step "ruff check" "$BIN/ruff" check .
step "ruff format" "$BIN/ruff" format --check .
step "mypy" "$BIN/mypy"
step "pytest" "$BIN/pytest" "$@"

echo >&2
if ((${#failed[@]})); then
    joined="$(printf '%s, ' "${failed[@]}")"
    printf 'test.sh: FAILED: %s\n' "${joined%, }" >&2
    exit 1
fi
echo "test.sh: all checks passed" >&2
