"""The ``inferwatch`` command line.

Every error a user can cause ends in one line on stderr and a non-zero exit code (1), never a
traceback; usage errors exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from baselines.build import build_baseline, infer_schema, load_baseline
from baselines.errors import BaselineError
from baselines.store import BaselineStore
from streams import process
from streams.config import Settings, load_settings
from streams.decode import DeadLetter, Decoder, parse_events, parse_ts
from streams.errors import ConfigError, StreamsError
from streams.files import JsonlWriter, Progress, dead_letter_record, read_jsonl_chunks
from streams.logs import setup_logging

log = logging.getLogger("inferwatch")


class UsageError(StreamsError):
    """A combination of arguments that cannot work."""


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    s = load_settings(getattr(args, "config", None), overrides=overrides)
    setup_logging(getattr(args, "log_level", None) or s.logging.level, json_lines=s.logging.json_lines)
    return s


def _store(settings: Settings) -> BaselineStore:
    from streams.service import open_store

    return open_store(settings)


def _print(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


# -- baseline ------------------------------------------------------------------------------------
def cmd_baseline_build(args: argparse.Namespace) -> int:
    s = _settings(args, **{"baselines.store": args.out})
    store = _store(s)
    progress = Progress("reading reference events")
    values: list[bytes] = []
    events: list[dict[str, Any]] = []
    dead: list[DeadLetter] = []
    sha = hashlib.sha256()
    for lines, _ in read_jsonl_chunks(args.input, 10_000):
        objs, _, bad = parse_events(lines, max_message_bytes=s.max_message_bytes)
        for line in lines:
            sha.update(line + b"\n")
        events.extend(o for o in objs if not args.model_id or o.get("model_id") == args.model_id)
        values.extend(lines)
        dead.extend(bad)
        progress.update(len(events))
    progress.close()
    models = sorted({str(e["model_id"]) for e in events})
    if not models:
        raise UsageError(
            f"{args.input}: no valid reference events" + (f" of model {args.model_id!r}" if args.model_id else "")
        )
    if len(models) > 1:
        raise UsageError(
            f"{args.input} holds events of several models ({', '.join(models)}): choose one with --model-id"
        )
    model_id = models[0]
    if dead:
        log.warning("%d reference lines were invalid and skipped (first: %s)", len(dead), dead[0].detail)
    schema = infer_schema(events, model_id)
    decoded = Decoder({model_id: schema}, max_message_bytes=s.max_message_bytes).decode(values)
    batch = next(b.batch for b in decoded.batches if b.model_id == model_id)
    info = build_baseline(
        store,
        batch,
        schema,
        n_bins=args.bins or s.baselines.n_bins,
        source={"file": os.path.basename(args.input), "sha256": sha.hexdigest(), "events": len(batch)},
        actor=args.actor,
        promote=False if args.no_promote else None,
        anomaly_learned=s.anomaly.learned,
        anomaly_fpr=s.anomaly.fpr,
    )
    log.info(
        "baseline %s/%s from %d events (%d numeric, %d categorical features)%s",
        model_id,
        info.version,
        len(batch),
        len(schema.numeric),
        len(schema.categorical),
        "; active" if info.active else "",
    )
    print(info.version)
    return 0


def _info_json(info: Any) -> dict[str, Any]:
    return {
        "model_id": info.model_id,
        "version": info.version,
        "created_at": info.created_at.isoformat(),
        "active": info.active,
        "path": str(info.path),
    }


def cmd_baseline_list(args: argparse.Namespace) -> int:
    store = _store(_settings(args, **{"baselines.store": args.store}))
    models = [args.model_id] if args.model_id else store.list_models()
    for m in models:
        for info in store.list_versions(m):
            print(f"{m}\t{info.version}\t{info.created_at.isoformat()}\t{'active' if info.active else ''}".rstrip())
    return 0


def cmd_baseline_show(args: argparse.Namespace) -> int:
    store = _store(_settings(args, **{"baselines.store": args.store}))
    b = load_baseline(store, args.model_id, args.version)
    ref = b.reference
    _print(
        {
            **_info_json(b.info),
            "n_events": ref.n_events,
            "schema": ref.to_arrays()[1]["schema"],
            "performance": dict(ref.performance),
            "columns": [
                {
                    "name": n,
                    "role": r,
                    "type": "numeric",
                    "mean": float(ref.num_mean[i]),
                    "std": float(ref.num_std[i]),
                    "min": float(ref.num_min[i]),
                    "max": float(ref.num_max[i]),
                    "missing_rate": float(ref.num_missing[i]) / ref.n_events,
                }
                for i, (n, r) in enumerate(zip(ref.num_names, ref.num_roles, strict=True))
            ]
            + [
                {
                    "name": n,
                    "role": r,
                    "type": "categorical",
                    "categories": int(ref.cat_sizes[i]),
                    "missing_rate": float(ref.cat_missing[i]) / ref.n_events,
                }
                for i, (n, r) in enumerate(zip(ref.cat_names, ref.cat_roles, strict=True))
            ],
            "source": b.info.meta.get("source", {}),
        }
    )
    return 0


def cmd_baseline_verify(args: argparse.Namespace) -> int:
    store = _store(_settings(args, **{"baselines.store": args.store}))
    targets: list[tuple[str, str | None]]
    if args.model_id:
        targets = (
            [(args.model_id, args.version)]
            if args.version
            else [(args.model_id, i.version) for i in store.list_versions(args.model_id)]
        )
    else:
        targets = [(m, i.version) for m in store.list_models() for i in store.list_versions(m)]
    ok = True
    for m, v in targets:
        report = store.verify(m, v)
        print(report.summary())
        ok &= report.ok
    return 0 if ok else 1


def cmd_baseline_promote(args: argparse.Namespace) -> int:
    store = _store(_settings(args, **{"baselines.store": args.store}))
    store.promote(args.model_id, args.version, actor=args.actor, reason=args.reason)
    print(f"{args.model_id}: active version is now {args.version}")
    return 0


def cmd_baseline_rollback(args: argparse.Namespace) -> int:
    store = _store(_settings(args, **{"baselines.store": args.store}))
    version = store.rollback(args.model_id, actor=args.actor, reason=args.reason)
    print(f"{args.model_id}: rolled back; active version is now {version}")
    return 0


def cmd_baseline_log(args: argparse.Namespace) -> int:
    store = _store(_settings(args, **{"baselines.store": args.store}))
    for entry in store.audit_log(args.model_id):
        sys.stdout.write(orjson.dumps(entry).decode() + "\n")
    return 0


# -- replay / run --------------------------------------------------------------------------------
def _time_arg(value: str, name: str) -> int:
    # ASCII digits only: str.isdigit() is also true for "²", which int() rejects with a traceback.
    ts = parse_ts(int(value) if value.isascii() and value.isdecimal() else value)
    if ts is None:
        raise UsageError(f"{name} must be epoch milliseconds or an RFC 3339 time with offset, got {value!r}")
    return ts


def cmd_replay(args: argparse.Namespace) -> int:
    from streams.replay import replay_file, replay_topic
    from streams.service import load_active_baselines

    overrides: dict[str, Any] = {"baselines.store": args.baselines}
    if args.bootstrap_servers:
        overrides["kafka.bootstrap_servers"] = args.bootstrap_servers
    s = _settings(args, **overrides)
    if bool(args.input) == bool(args.topic):
        raise UsageError("give exactly one of --input FILE or --topic TOPIC")
    if args.topic and (args.from_time is None or args.to_time is None):
        raise UsageError("--topic needs --from and --to")
    # Usage errors first: before the store is read, a broker contacted or an output file created.
    time_range = (_time_arg(args.from_time, "--from"), _time_arg(args.to_time, "--to")) if args.topic else None
    baselines = load_active_baselines(_store(s))
    producer = None
    writer: JsonlWriter | None = None
    if args.alerts.startswith("topic:"):
        from streams.kafka_io import DeliveringProducer, ensure_topics, producer_config

        alerts_topic = args.alerts.removeprefix("topic:")
        ensure_topics(s.kafka.common(), [alerts_topic])
        producer = DeliveringProducer(producer_config(s.kafka))

        def on_alert(a: dict[str, Any]) -> None:
            assert producer is not None
            producer.produce(alerts_topic, orjson.dumps(a), key=a["alert_id"].encode())
    else:
        writer = JsonlWriter(args.alerts)

        def on_alert(a: dict[str, Any]) -> None:
            assert writer is not None
            writer.write(a)

    dead_writer = JsonlWriter(args.dead_letters) if args.dead_letters else None
    dead_count: dict[str, int] = {}

    def on_dead(d: DeadLetter, where: dict[str, Any]) -> None:
        dead_count[d.reason] = dead_count.get(d.reason, 0) + 1
        if dead_writer is not None:
            dead_writer.write(dead_letter_record(d, where))

    progress = Progress("replay")
    try:
        if args.input:
            summary = replay_file(
                s, baselines, args.input, on_alert, on_dead, progress=progress, decode_ahead=args.decode_ahead
            )
        else:
            assert time_range is not None
            summary = replay_topic(
                s,
                baselines,
                args.topic,
                *time_range,
                on_alert,
                on_dead,
                progress=progress,
            )
        if producer is not None:
            producer.flush()
    finally:
        if writer is not None:
            writer.close()
        if dead_writer is not None:
            dead_writer.close()
    log.info(
        "replayed %d events: %d alerts, %d dead letters %s",
        summary.events,
        summary.alerts,
        summary.dead_letters,
        dead_count or "",
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from streams.service import Service

    overrides = {"kafka.bootstrap_servers": args.bootstrap_servers} if args.bootstrap_servers else {}
    s = _settings(args, **overrides)
    service = Service(s)

    def _stop(signum: int, _frame: object) -> None:
        log.info("received %s: finishing the batch, checkpointing and committing", signal.Signals(signum).name)
        service.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    service.run()
    log.info("stopped cleanly")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.demo import run_demo

    setup_logging(args.log_level or "WARNING")
    return run_demo(args.bootstrap_servers, workdir=Path(args.workdir), events=args.events)


# -- parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inferwatch", description="Streaming drift and anomaly detection for ML models.")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("baseline", help="build and manage baselines").add_subparsers(dest="action", required=True)

    def store_args(q: argparse.ArgumentParser, model: bool = False, version: bool = False) -> None:
        q.add_argument("--store", "--baselines", required=True, help="baseline store directory")
        q.add_argument("--config", help="configuration file (signing key, ...)")
        if model:
            q.add_argument("--model-id", required=True)
        if version:
            q.add_argument("--version")

    q = b.add_parser("build", help="build a baseline version from reference events (JSONL)")
    q.add_argument("--input", required=True)
    q.add_argument("--out", required=True, help="baseline store directory")
    q.add_argument("--model-id")
    q.add_argument("--bins", type=int, help="quantile bins per numeric feature (default 20)")
    q.add_argument("--no-promote", action="store_true", help="do not make it the active version")
    q.add_argument("--actor", default=os.environ.get("USER", "inferwatch"))
    q.add_argument("--config")
    q.set_defaults(func=cmd_baseline_build)
    q = b.add_parser("list", help="list baseline versions")
    store_args(q)
    q.add_argument("--model-id")
    q.set_defaults(func=cmd_baseline_list)
    q = b.add_parser("show", help="show a baseline (the active version by default)")
    store_args(q, model=True, version=True)
    q.set_defaults(func=cmd_baseline_show)
    q = b.add_parser("verify", help="check digests and signatures; exit 1 if any fails")
    store_args(q, version=True)
    q.add_argument("--model-id")
    q.set_defaults(func=cmd_baseline_verify)
    for name, func, needs_version in (
        ("promote", cmd_baseline_promote, True),
        ("rollback", cmd_baseline_rollback, False),
    ):
        q = b.add_parser(name, help=f"{name} the active version of a model")
        store_args(q, model=True)
        if needs_version:
            q.add_argument("--version", required=True)
        q.add_argument("--reason", default="")
        q.add_argument("--actor", default=os.environ.get("USER", "inferwatch"))
        q.set_defaults(func=func)
    q = b.add_parser("log", help="print the audit log")
    store_args(q)
    q.add_argument("--model-id")
    q.set_defaults(func=cmd_baseline_log)

    q = sub.add_parser("replay", help="run detection over a file or a topic time range, deterministically")
    q.add_argument("--baselines", required=True, help="baseline store directory")
    q.add_argument("--input", help="JSONL file of inference events")
    q.add_argument("--topic", help="Kafka topic to replay a time range of")
    q.add_argument("--from", dest="from_time", help="start time (epoch ms or RFC 3339), inclusive")
    q.add_argument("--to", dest="to_time", help="end time (epoch ms or RFC 3339), exclusive")
    q.add_argument("--alerts", required=True, help="alerts JSONL file, '-' for stdout, or topic:NAME")
    q.add_argument("--dead-letters", help="write dead letters to this JSONL file")
    q.add_argument(
        "--decode-ahead",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decode a file in a second process while detecting (default: files of 64 MiB+ on 2+ cores)",
    )
    q.add_argument("--bootstrap-servers")
    q.add_argument("--config")
    q.set_defaults(func=cmd_replay)

    q = sub.add_parser("run", help="attach to Kafka and publish alerts until SIGTERM/SIGINT")
    q.add_argument("--config")
    q.add_argument("--bootstrap-servers")
    q.set_defaults(func=cmd_run)

    q = sub.add_parser("demo", help="synthetic stream with injected drift on a local broker")
    q.add_argument("--bootstrap-servers", required=True)
    q.add_argument("--workdir", default="demo-out")
    q.add_argument("--events", type=int, default=40_000)
    q.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``inferwatch`` console script."""
    args = build_parser().parse_args(argv)
    process.settle()  # one BLAS thread, freed memory kept for reuse
    try:
        return int(args.func(args))
    except (StreamsError, BaselineError, ConfigError) as e:
        sys.stderr.write(f"inferwatch: error: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
