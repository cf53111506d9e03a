"""Synthetic inference events for the demo, the tests and the benchmarks (seeded, reproducible)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import orjson

REGIONS = ("north", "south", "east", "west", "central")
REGION_P = (0.3, 0.25, 0.2, 0.15, 0.1)


@dataclass(frozen=True)
class SyntheticStream:
    """A binary classifier's inference events with optional injected drift.

    Parameters
    ----------
    n_numeric
        Numeric features ``f00``, ``f01``, ...; one categorical feature ``region`` is added if
        ``categorical``.
    shift_feature, shift_at, shift_by
        From event ``shift_at`` on, feature ``shift_feature`` moves by ``shift_by`` standard deviations.
    start_ts, interval_ms
        Event time of the first event and spacing of events.

    Examples
    --------
    >>> lines = list(SyntheticStream(n_numeric=2).lines(3, seed=0))
    >>> len(lines), orjson.loads(lines[0])["model_id"]
    (3, 'credit-risk')
    """

    n_numeric: int = 16
    categorical: bool = True
    model_id: str = "credit-risk"
    shift_feature: int | None = None
    shift_at: int = 0
    shift_by: float = 0.0
    start_ts: int = 1_795_000_000_000
    interval_ms: int = 10
    n_clients: int = 50
    labels: bool = False

    def names(self) -> list[str]:
        return [f"f{i:02d}" for i in range(self.n_numeric)]

    def arrays(self, n: int, *, seed: int, offset: int = 0) -> dict[str, np.ndarray]:
        """Columns of events ``offset .. offset + n - 1`` (drift applies by absolute index)."""
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, self.n_numeric))
        idx = offset + np.arange(n)
        if self.shift_feature is not None:
            x[idx >= self.shift_at, self.shift_feature] += self.shift_by
        w = np.linspace(1.0, -1.0, self.n_numeric) / np.sqrt(self.n_numeric)
        p = 1 / (1 + np.exp(-(x @ w)))
        out = {
            "x": x,
            "p": p,
            "label": (rng.random(n) < p).astype(np.int64),
            "client": rng.integers(0, self.n_clients, size=n),
            "ts": self.start_ts + idx * self.interval_ms,
            "idx": idx,
        }
        if self.categorical:
            out["region"] = rng.choice(len(REGIONS), size=n, p=REGION_P)
        return out

    def lines(self, n: int, *, seed: int, offset: int = 0) -> Iterator[bytes]:
        """``n`` events as JSON lines (bytes, no newline)."""
        a = self.arrays(n, seed=seed, offset=offset)
        names = self.names()
        for i in range(n):
            feats: dict[str, object] = dict(zip(names, a["x"][i].tolist(), strict=True))
            if self.categorical:
                feats["region"] = REGIONS[int(a["region"][i])]
            p = float(a["p"][i])
            ev: dict[str, object] = {
                "event_id": f"{self.model_id}-{int(a['idx'][i])}",
                "ts": int(a["ts"][i]),
                "model_id": self.model_id,
                "model_version": "1.4.0",
                "client_id": f"client-{int(a['client'][i]):04d}",
                "features": feats,
                "prediction": "approve" if p >= 0.5 else "deny",
                "probabilities": {"approve": round(p, 6), "deny": round(1 - p, 6)},
            }
            if self.labels:
                ev["label"] = "approve" if a["label"][i] else "deny"
            yield orjson.dumps(ev)
