#!/usr/bin/env bash
# Create or refresh the project virtualenv: <repo>/.venv with Python 3.11+, the package installed editable with
# its dev extras, every version pinned by requirements.lock. Idempotent and quick when nothing changed.
#
# Usage: scripts/setup.sh            (then: source .venv/bin/activate)
#   INFERWATCH_PYTHON=/path/to/python3.11   interpreter to build the venv with (default: python3.11, else python3)
#   INFERWATCH_SETUP_FORCE=1                reinstall even if the stamp says nothing changed
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.inferwatch-setup.stamp"
LOG="$VENV/.inferwatch-setup.log"

log() { printf 'setup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cd "$ROOT"
[[ -f pyproject.toml && -f requirements.lock ]] || die "pyproject.toml or requirements.lock missing in $ROOT"

if [[ -n "${INFERWATCH_PYTHON:-}" ]]; then
    PY="$INFERWATCH_PYTHON"
elif command -v python3.11 >/dev/null 2>&1; then
    PY=python3.11
else
    PY=python3
fi
PY_VERSION="$("$PY" -c 'import platform; print(platform.python_version())' 2>/dev/null)" ||
    die "cannot run '$PY'; install Python 3.11+ or set INFERWATCH_PYTHON"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PY is Python $PY_VERSION; 3.11+ is required"

# Everything that should trigger a reinstall when it changes.
fingerprint() {
    {
        cat pyproject.toml requirements.lock streams/_native.c streams/_pow10.h
        "$VENV/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null || true
    } | "$PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
}

if [[ -z "${INFERWATCH_SETUP_FORCE:-}" && -x "$VENV/bin/python" && -f "$STAMP" ]] &&
    [[ "$(<"$STAMP")" == "$(fingerprint)" ]]; then
    log "up to date ($VENV)"
    exit 0
fi

start=$SECONDS
# A venv whose interpreter is gone or too old (e.g. the base Python was removed) is rebuilt from scratch.
if [[ -d "$VENV" ]] && ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    log "existing $VENV is broken or too old; recreating it"
    rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV with $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    "$PY" -m venv "$VENV" || die "python -m venv failed (on Debian/Ubuntu: apt-get install python3.11-venv)"
fi
rm -f "$STAMP"

run() { # run quietly into the log; on failure show its tail
    if ! "$@" >>"$LOG" 2>&1; then
        tail -n 40 "$LOG" >&2
        die "'$*' failed (full log: $LOG)"
    fi
}
: >"$LOG"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
log "installing dependencies (pinned by requirements.lock) ..."
run "$VENV/bin/python" -m pip install --upgrade pip
run "$VENV/bin/python" -m pip install -c requirements.lock -e '.[dev]'

fingerprint >"$STAMP"
log "done in $((SECONDS - start)) s; activate with: source .venv/bin/activate"
