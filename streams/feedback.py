"""Feedback messages: late ground-truth labels ``{"event_id", "label", "ts"[, "model_id"]}``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from detector.schema import MISSING, UNSEEN, Schema
from streams.decode import DeadLetter, _loads_one, _number_key, _raw, parse_ts


@dataclass
class FeedbackLabels:
    """Valid labels of one chunk of feedback messages, and the dead letters of the others.

    Examples
    --------
    >>> fb = parse_feedback([b'{"event_id": "e1", "label": "yes", "ts": 5}', b'{"label": 1}'])
    >>> fb.event_ids, [d.reason for d in fb.dead]
    (['e1'], ['missing_field'])
    >>> fb.encode([0], Schema("m", prediction="categorical", classes=("no", "yes")))[2].tolist()
    [1]
    """

    index: list[int] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    model_ids: list[str | None] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)

    def rows_for(self, model_id: str) -> list[int]:
        """Rows addressed to ``model_id``, or to no model in particular."""
        return [i for i, m in enumerate(self.model_ids) if m is None or m == model_id]

    def encode(
        self, rows: Sequence[int], schema: Schema
    ) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.float64], npt.NDArray[np.int32], npt.NDArray[np.int64]]:
        """``(event_id, label, label_code, ts)`` of ``rows`` laid out for ``schema``."""
        ids = np.asarray([self.event_ids[i] for i in rows], dtype=object)
        ts = np.asarray([self.ts[i] for i in rows], dtype=np.int64)
        values = [self.labels[i] for i in rows]
        label = np.full(len(rows), np.nan)
        code = np.full(len(rows), MISSING, dtype=np.int32)
        if schema.prediction == "categorical":
            lut = schema.class_index
            keys = [_number_key(v) if isinstance(v, int | float) else str(v) for v in values]
            code[:] = [lut.get(k, UNSEEN) for k in keys]
        else:
            label[:] = [float(v) if isinstance(v, int | float) else np.nan for v in values]
        return ids, label, code, ts


def parse_feedback(values: Sequence[bytes | None], *, max_message_bytes: int = 1_048_576) -> FeedbackLabels:
    """Parse feedback messages; never raises on message content."""
    out = FeedbackLabels()
    for i, value in enumerate(values):
        obj, reason, detail = _loads_one(value, max_message_bytes)
        if reason:
            out.dead.append(DeadLetter(i, _raw(value), reason, detail))
            continue
        if not isinstance(obj, dict):
            out.dead.append(DeadLetter(i, _raw(value), "not_object", "feedback must be a JSON object"))
            continue
        missing = [k for k in ("event_id", "label", "ts") if obj.get(k) is None]
        if missing:
            out.dead.append(DeadLetter(i, _raw(value), "missing_field", f"feedback needs field {missing[0]!r}"))
            continue
        event_id, label, model_id = obj["event_id"], obj["label"], obj.get("model_id")
        ts = parse_ts(obj["ts"])
        if (
            not isinstance(event_id, str)
            or ts is None
            or isinstance(label, bool)
            or not isinstance(label, str | int | float)
            or (model_id is not None and not isinstance(model_id, str))
        ):
            detail = "feedback fields: event_id string, label number or string, ts epoch ms or RFC 3339"
            out.dead.append(DeadLetter(i, _raw(value), "bad_type", detail))
            continue
        out.index.append(i)
        out.event_ids.append(event_id)
        out.labels.append(label)
        out.ts.append(ts)
        out.model_ids.append(model_id)
    return out
