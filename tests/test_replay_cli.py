"""The ``inferwatch`` command line as a user runs it (subprocesses, no broker needed).

* Error paths: every mistake a user can make ends in exactly one line on stderr,
  ``inferwatch: error: ...``, and exit code 1 — never a traceback.
* Done means: ``inferwatch baseline build`` then ``inferwatch replay`` catches a 0.4 sd shift of one of
  16 numeric features within 5,000 events, with no alert before it, and is silent on the same
  stream without the shift.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.synthetic import SyntheticStream

REPO = Path(__file__).resolve().parent.parent
MODEL = "credit-risk"
CLI_TIMEOUT_S = 60.0
# A replay gives up on an unreachable broker after 15 s; add the interpreter's start-up on a busy machine.
UNREACHABLE_TIMEOUT_S = 30.0

N_EVENTS = 40_000
SHIFT_AT = 20_000
DETECTION_DELAY_MAX = 5_000


def _inferwatch() -> str:
    here = Path(sys.executable).parent / "inferwatch"
    return str(here if here.exists() else REPO / ".venv" / "bin" / "inferwatch")


def inferwatch(*args: str, timeout: float = CLI_TIMEOUT_S, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERWATCH__")}
    return subprocess.run(
        [_inferwatch(), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False
    )


def ok(*args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    proc = inferwatch(*args, timeout=timeout)
    assert proc.returncode == 0, f"inferwatch {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str, log_lines: int = 0) -> str:
    """Exit 1 and stderr ends in one line ``inferwatch: error: ...`` containing every fragment.

    Before it, at most ``log_lines`` log records (e.g. the broker's refused connection), nothing else.
    """
    shown = f"exit {proc.returncode}, stderr:\n{proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr, shown
    assert proc.returncode == 1, shown
    lines = proc.stderr.splitlines()
    assert 1 <= len(lines) <= 1 + log_lines, f"expected one line on stderr, got {len(lines)}: {shown}"
    assert sum(line.startswith("inferwatch: error: ") for line in lines) == 1, shown
    line = lines[-1]
    assert line.startswith("inferwatch: error: "), shown
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def write_jsonl(path: Path, lines: Sequence[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _index(event_id: str) -> int:
    return int(event_id.rsplit("-", 1)[1])


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def store(work: Path) -> Path:
    """A store whose active baseline was built by ``inferwatch baseline build`` from 20,000 stable events."""
    ref = write_jsonl(work / "reference.jsonl", list(SyntheticStream().lines(20_000, seed=1)))
    out = ok("baseline", "build", "--input", str(ref), "--out", str(work / "store"))
    assert len(out.stdout.strip()) == 16, f"expected the version on stdout, got {out.stdout!r}"
    return work / "store"


@pytest.fixture(scope="module")
def events(work: Path) -> Path:
    """A small valid input for the error-path tests."""
    return write_jsonl(work / "events.jsonl", list(SyntheticStream().lines(500, seed=2)))


# -- error paths -----------------------------------------------------------------------------------
def test_missing_input_file(store: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-events.jsonl"
    proc = inferwatch(
        "replay", "--baselines", str(store), "--input", str(missing), "--alerts", str(tmp_path / "alerts.jsonl")
    )
    assert_one_line_error(proc, str(missing), "No such file")


def test_missing_reference_file_for_baseline_build(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-reference.jsonl"
    proc = inferwatch("baseline", "build", "--input", str(missing), "--out", str(tmp_path / "store"))
    assert_one_line_error(proc, str(missing))


def test_missing_baseline_store(events: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-store"
    proc = inferwatch(
        "replay", "--baselines", str(missing), "--input", str(events), "--alerts", str(tmp_path / "alerts.jsonl")
    )
    assert_one_line_error(proc, "no active baseline", str(missing))
    assert not missing.exists(), "a replay must not create the store it reads"


def test_store_without_active_baseline(events: Path, tmp_path: Path) -> None:
    unpromoted = tmp_path / "store"
    ref = write_jsonl(tmp_path / "reference.jsonl", list(SyntheticStream().lines(2_000, seed=1)))
    ok("baseline", "build", "--input", str(ref), "--out", str(unpromoted), "--no-promote")
    assert not list(unpromoted.glob("*/ACTIVE"))
    proc = inferwatch(
        "replay", "--baselines", str(unpromoted), "--input", str(events), "--alerts", str(tmp_path / "alerts.jsonl")
    )
    # One warning naming the model without an active baseline may come first.
    assert_one_line_error(proc, "no active baseline", log_lines=1)


def test_run_without_active_baseline_fails_before_touching_kafka(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_bytes(
        orjson.dumps(
            {
                "baselines": {"store": str(tmp_path / "empty")},
                "kafka": {"bootstrap_servers": f"127.0.0.1:{_closed_port()}"},
                "checkpoint": {"dir": str(tmp_path / "state")},
                "metrics": {"port": 0},
            }
        )
    )
    t0 = time.monotonic()
    proc = inferwatch("run", "--config", str(config), timeout=UNREACHABLE_TIMEOUT_S)
    assert_one_line_error(proc, "no active baseline")
    assert time.monotonic() - t0 < 20


@pytest.mark.parametrize(
    ("name", "content", "fragments"),
    [
        ("bad.json", b'{"drift": {"size": 1000,', ("bad.json", "not valid json")),
        ("unknown-key.json", b'{"kafka": {"bootstrap_server": "x:1"}}', ("kafka.bootstrap_server",)),
        ("unknown-section.json", b'{"detector": {}}', ("detector",)),
        ("size-step.json", b'{"drift": {"size": 1000, "step": 300}}', ("drift.size (1000)", "drift.step (300)")),
        ("zero-size.json", b'{"drift": {"size": 0}}', ("drift.size",)),
        ("anomaly-window.json", b'{"anomaly": {"size": 1000, "step": 300}}', ("anomaly.size (1000)", "anomaly.step")),
        ("labels-window.json", b'{"performance": {"size": 500, "step": 200}}', ("performance.size (500)",)),
        ("bad.toml", b"[drift\nsize = 1", ("bad.toml", "not valid toml")),
        ("size-step.toml", b"[drift]\nsize = 2000\nstep = 300\n", ("drift.size (2000)",)),
        ("latin1.json", '{"logging": {"level": "INFO"}} // é'.encode("latin-1"), ("latin1.json", "UTF-8")),
        ("nope.toml", None, ("nope.toml",)),  # no such file
    ],
)
def test_invalid_config_file(
    store: Path, events: Path, tmp_path: Path, name: str, content: bytes | None, fragments: tuple[str, ...]
) -> None:
    config = tmp_path / name
    if content is not None:
        config.write_bytes(content)
    proc = inferwatch(
        "replay",
        "--config",
        str(config),
        "--baselines",
        str(store),
        "--input",
        str(events),
        "--alerts",
        str(tmp_path / "alerts.jsonl"),
    )
    assert_one_line_error(proc, *fragments)


@pytest.mark.parametrize("value", ["yesterday", "2026-11-18T10:00:00", "²", ""])
def test_from_that_is_not_a_time(store: Path, tmp_path: Path, value: str) -> None:
    # Checked before anything else: no broker is contacted (this one does not exist) and no file written.
    alerts = tmp_path / "alerts.jsonl"
    proc = inferwatch(
        "replay",
        "--baselines",
        str(store),
        "--topic",
        "events",
        "--from",
        value,
        "--to",
        "1795000000000",
        "--alerts",
        str(alerts),
        "--bootstrap-servers",
        f"127.0.0.1:{_closed_port()}",
        timeout=20,
    )
    assert_one_line_error(proc, "--from", repr(value))
    assert not alerts.exists(), "a usage error must not leave an alerts file behind"


def test_to_that_is_not_a_time(store: Path, tmp_path: Path) -> None:
    proc = inferwatch(
        "replay",
        "--baselines",
        str(store),
        "--topic",
        "events",
        "--from",
        "0",
        "--to",
        "soon",
        "--alerts",
        str(tmp_path / "alerts.jsonl"),
        "--bootstrap-servers",
        f"127.0.0.1:{_closed_port()}",
        timeout=20,
    )
    assert_one_line_error(proc, "--to", "'soon'")


def _closed_port() -> int:
    """A local TCP port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_broker_for_topic_replay(store: Path, tmp_path: Path) -> None:
    port = _closed_port()
    t0 = time.monotonic()
    proc = inferwatch(
        "replay",
        "--baselines",
        str(store),
        "--topic",
        "events",
        "--from",
        "0",
        "--to",
        "1795000000000",
        "--alerts",
        str(tmp_path / "alerts.jsonl"),
        "--bootstrap-servers",
        f"127.0.0.1:{port}",
        timeout=UNREACHABLE_TIMEOUT_S + 15,
    )
    elapsed = time.monotonic() - t0
    # The refused connection may be logged, once: not once per retry (hundreds of lines).
    assert_one_line_error(proc, "cannot reach Kafka", log_lines=4)
    assert f"127.0.0.1:{port}" in proc.stderr, "stderr should name the broker that could not be reached"
    assert elapsed < UNREACHABLE_TIMEOUT_S, f"took {elapsed:.0f} s to give up on an unreachable broker"


@pytest.mark.parametrize("tamper", ["flip_byte", "truncate", "delete"])
def test_tampered_baseline(store: Path, events: Path, tmp_path: Path, tamper: str) -> None:
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    (version_dir,) = [p for p in (copy / MODEL).iterdir() if p.is_dir()]
    victim = version_dir / "num_mean.npy"
    data = bytearray(victim.read_bytes())
    if tamper == "flip_byte":
        data[-1] ^= 0x01
        victim.write_bytes(bytes(data))
    elif tamper == "truncate":
        victim.write_bytes(bytes(data[: len(data) // 2]))
    else:
        victim.unlink()
    proc = inferwatch(
        "replay", "--baselines", str(copy), "--input", str(events), "--alerts", str(tmp_path / "alerts.jsonl")
    )
    assert_one_line_error(proc, "num_mean.npy", version_dir.name)
    if tamper == "flip_byte":
        verify = inferwatch("baseline", "verify", "--store", str(copy))
        assert verify.returncode == 1 and "num_mean.npy" in verify.stdout, verify.stdout + verify.stderr


# -- done means ------------------------------------------------------------------------------------
def _replay(store: Path, lines: Sequence[bytes], tmp_path: Path) -> list[dict[str, Any]]:
    events = write_jsonl(tmp_path / "events.jsonl", lines)
    out = tmp_path / "alerts.jsonl"
    ok("replay", "--baselines", str(store), "--input", str(events), "--alerts", str(out))
    return read_jsonl(out)


def test_done_means_shift_of_one_feature_is_caught_and_nothing_before(store: Path, tmp_path: Path) -> None:
    stream = SyntheticStream(n_numeric=16, categorical=True, shift_feature=5, shift_at=SHIFT_AT, shift_by=0.4)
    alerts = _replay(store, list(stream.lines(N_EVENTS, seed=2)), tmp_path)
    early = [(a["kind"], a["features"], a["event_id"]) for a in alerts if _index(a["event_id"]) < SHIFT_AT]
    assert not early, f"alerts before the shift at {SHIFT_AT}: {early}"
    caught = [a for a in alerts if a["kind"] == "feature_drift" and a["status"] == "open" and a["features"] == ["f05"]]
    assert caught, f"the shift of f05 was not caught: {[(a['kind'], a['features']) for a in alerts]}"
    delay = _index(caught[0]["event_id"]) - SHIFT_AT
    assert 0 <= delay < DETECTION_DELAY_MAX, f"caught {delay} events after the shift"
    others = [a for a in alerts if a["kind"] == "feature_drift" and a["features"] != ["f05"]]
    assert not others, f"features that did not shift were reported: {[a['features'] for a in others]}"


def test_done_means_same_stream_without_shift_gives_no_alert(store: Path, tmp_path: Path) -> None:
    stream = SyntheticStream(n_numeric=16, categorical=True)
    alerts = _replay(store, list(stream.lines(N_EVENTS, seed=2)), tmp_path)
    shown = [(a["kind"], a["features"], a["event_id"]) for a in alerts]
    assert alerts == [], f"alerts on a stream without drift: {shown}"


def test_replay_decoding_ahead_or_not_gives_the_same_alerts(store: Path, tmp_path: Path) -> None:
    stream = SyntheticStream(n_numeric=16, categorical=True, shift_feature=5, shift_at=SHIFT_AT, shift_by=0.4)
    events = write_jsonl(tmp_path / "events.jsonl", list(stream.lines(N_EVENTS, seed=2)))
    outs = []
    for extra in ("--decode-ahead", "--no-decode-ahead"):
        out = tmp_path / f"alerts{extra}.jsonl"
        ok("replay", "--baselines", str(store), "--input", str(events), "--alerts", str(out), extra)
        outs.append(read_jsonl(out))
    assert outs[0] and outs[0] == outs[1]


def test_baseline_build_warns_when_reference_events_have_no_client_id(tmp_path: Path) -> None:
    """Without client ids the adversarial calibration cannot see the reference clients' own sequences; the build
    says so (and still succeeds); with them, it does not."""
    lines = []
    for line in SyntheticStream().lines(1_000, seed=3):
        e = orjson.loads(line)
        e.pop("client_id")
        lines.append(orjson.dumps(e))
    proc = ok(
        "baseline", "build", "--input", str(write_jsonl(tmp_path / "ref.jsonl", lines)), "--out", str(tmp_path / "s")
    )
    assert "no client_id" in proc.stderr
    with_ids = write_jsonl(tmp_path / "ref-ids.jsonl", list(SyntheticStream().lines(1_000, seed=3)))
    proc = ok("baseline", "build", "--input", str(with_ids), "--out", str(tmp_path / "s2"))
    assert "client_id" not in proc.stderr
