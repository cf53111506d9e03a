"""Per-client detection of attack query patterns: evasion search, model extraction and query floods.

Every client (the events' ``client_id``) gets a fixed-size row in a bounded client table: a ring of
its last ``history`` queries as low-dimensional random projections (float16), their predicted
classes and sequence numbers, and a few counters. From it, per event:

* **evasion search** (HopSkipJump, Boundary, Sign-OPT, ZOO, SimBA ...): near-duplicates of the
  client's recent queries whose predicted class *flips* (walking along the decision boundary),
  ``k`` nearest recent queries all closer than benign traffic ever is (Stateful Detection, Chen et
  al. 2020) and consecutive steps along one line (binary and line searches; GWAD's direction
  statistics); near-duplicates of out-of-distribution queries (searches started from noise or a
  large perturbation) add half a step, once the client has sent an in-distribution query that was no
  near-duplicate (the input a search perturbs). For in-distribution queries the tight term counts only
  once the client's near-duplicates have shown a search signature (a flip, a small margin or a line
  step): a client resending one input with small noise is tight too. A CUSUM of these increments opens
  ``evasion_probing``; plain retries (the same input again with small noise, the same class, no
  progress) add nothing and drain it. Coordinate-wise searches (ZOO, SimBA, Square) show none of this
  (ZOO's steps of 1e-4 are below float16), but their queries are *structured steps* from one of the
  client's last two raw queries: a few coordinates changed (seen exactly through a fingerprint of the
  float64 values), or most changed coordinates moved by one amount (both limits calibrated on the reference: on
  discrete features, benign steps change few values, all by one amount, and the tests tighten or switch off), and
  exact repeats of a query right after such steps (Square re-queries its best). Exact re-sends of the input a
  step starts from count too, once the step shows they were a search querying its current best (Square sends its
  start point three times), and a step that changes its base's predicted class counts twice. A second CUSUM
  counts them; either one opens the alert.
* **model extraction**: the rate of out-of-distribution queries (``ood`` flags given by the
  caller) and of queries closer to an earlier query than benign clients come but not duplicates
  (synthetic queries around seeds, PRADA's observation) are tested against their reference rates
  with a binomial tail; a heavy client covering all classes evenly gets an ``info`` note
  (natural-data extraction looks like heavy benign use).
* **extraction split over accounts**: the ood queries of accounts that send nothing else, among the last
  ``ood_window`` events, against the reference ood rate (a binomial tail); once significant, a ``model_extraction``
  campaign alert lists the accounts with two such queries (see :meth:`AdversarialDetector._ood_campaign`).
* **query floods**: an exponentially decayed per-client rate against the normal per-client rate of
  the reference; the heaviest clients overall come from a mergeable Space-Saving sketch.
* **campaigns** (one search split over many client ids): a global, salted LSH index of recent
  queries (Blacklight, Li et al. 2022) links clients whose queries are near-duplicates of each
  other's with boundary evidence; a campaign is reported once (then updated), listing its clients.
  Campaigns whose members send near-duplicates of each other's queries merge; a client joins only
  while boundary hits are a sizeable share of its own queries (a heavy benign client sending a
  popular input an attack walks past stays out).
  Coordinate-wise searches (ZOO, SimBA, Square) split over many ids show no boundary evidence, but each step is
  a near-copy of the step before, sent by another account: a second global table, keyed by bands of the
  exact-value fingerprints (8 bands of 4 blocks, salted), finds for every query the most recent query of another
  client, of the last few minutes, that differs from it in 1 to 4 of the 32 blocks (a *probe hit*; exact
  repeats are none, unless they copy a probe hit of the last few minutes: a split Square's re-queries of its
  best point). Both clients count the hit; a hit links the two into a campaign while probe hits are at
  least half of each one's queries, and a client is listed once it has two (an account of a search split over
  more ids than it has steps sends one query: it is listed when its step continues the campaign's latest one).
  A benign client that sends the input a search started from gets a probe hit or two among its ordinary
  queries and stays out.
* **population shift** (every client's inputs move, e.g. a recalibrated sensor) is drift, not an
  attack: distance thresholds follow the spread of all recent queries (a decayed mean, shrinking
  only), the ood evidence is ignored while most recent events are ood, and the global index stops
  linking clients once the population's distances have shrunk (its cells have a fixed width).

Thresholds come from :class:`AdversarialArtifact`, fitted on reference traffic. Alerts carry event
ids, sequence numbers and statistics, never feature values. Client ids can be pseudonymized with
HMAC-SHA256.

A batch is processed without a per-event Python loop: events are grouped by client (a stable sort),
each client's events are laid out after the chronological contents of its ring so every event sees
exactly the ``history`` queries before it, and the per-client scalar states (CUSUM, counters, decayed
rate) are segmented scans. The global index and the probe table resolve same-slot events inside a batch in
stream order; the probe-hit counts are running counts per client, read at each hit's row.
The campaign pass reads per-client state (counts, rings) as it was at each hit's row, and the decayed
rate is summed in power-of-two units that rescale exactly, so a batch gives bit-identical alerts to its
rows one at a time or any other chunking (clients evicted mid-batch aside),
with O(1) amortized work per event; only clients with an open, cooling or firing incident step
through the (small) incident state machine event by event.

Memory per tracked client (24 history x 16 components, float16): ~1,080 bytes of arrays, plus for
structured steps 2 raw queries (float16 values of ``min(F, 64)`` coordinates, a salted subset beyond
64, and 16-byte fingerprints, and their exact re-send counts) and 13 bytes of counters, and a probe-hit count (4
bytes): ``1,091 + 4 * min(F, 64) + 45`` bytes, 1,392 for 64 features; plus the id map (~170 bytes). The global index is
fixed (``2**index_bits`` slots x ``index_tables`` x 32 bytes, 32 MiB by default), and so is the probe table
(``8 * 2**probe_bits`` slots of 8 bytes, 4 MiB by default, pointing into a log of the last ``2**probe_log_bits``
queries, 56 bytes each: fingerprint, uid, seq, ts, slot, time of the probe hit it is or copies; 14 MiB by default),
and so is the ood window (``ood_window`` events of 24 bytes, 24 KiB by default).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import stats

from detector.buffers import Scratch
from detector.decision import AlertDecision, Severity, Status
from detector.errors import SchemaMismatchError, SnapshotError
from detector.queries import FP_BLOCKS, PROBE_BANDS, QueryFeatures, QueryFeaturizer, embed
from detector.schema import MISSING, EventBatch

FORMAT = 1
KINDS = ("evasion_probing", "model_extraction", "query_flood")
EVASION, EXTRACTION, FLOOD = 0, 1, 2
_SEV: tuple[Severity, ...] = ("info", "info", "warning", "critical")  # index = level (0 unused)
_U64 = np.uint64
_POP_PRIOR = 64.0  # weight of the reference in the population gate, in events
_POP_DECAY = 1.0 / 256  # per event
_POP_INDEX = 0.7  # below this population distance scale the fixed index cells match unrelated queries
_POP_OOD = 0.5  # once most events are ood, the flag singles no client out (a population shift)
_POP_CHUNK = 2048  # events per step of the population gate's running sums (r**-j stays far from overflow)
#: (1 - _POP_DECAY) ** j and ** -j for j < _POP_CHUNK
_POP_POW = (1.0 - _POP_DECAY) ** (np.array([[1.0], [-1.0]]) * np.arange(_POP_CHUNK, dtype=np.float64))
_CAMP_RING = 32  # recent boundary hits kept per campaign to link new account pairs to it
_CAMP_SCAN = 64  # most recently active campaigns a new pair may join by proximity
_CAMP_PAIR = 4  # last queries of each client of a new pair compared with those campaigns
_MOVING = 1.2  # a campaign's last hits spread this many times their median step: steady progress (see _moving)
#: Layout version of :meth:`AdversarialDetector.snapshot` (``meta.state``); a snapshot of another layout (older ones
#: have none) raises :class:`SnapshotError`, and the pipeline starts the detector afresh.
_STATE = 9
# Structured steps (see ``AdversarialDetector._structured``): each client's last ``_RAW`` raw queries are kept as
# float16 values of at most ``_RAW_COLS`` coordinates and a fingerprint of the exact values, ``_FP_BLOCKS``
# blocks of coordinates (column % _FP_BLOCKS) with a 4-bit hash each, two blocks a byte.
_RAW = 2
_RAW_COLS = 64
_FP_BLOCKS = FP_BLOCKS
_STRUCT_SHARE = 0.6  # a step with at least this share of its changed coordinates at one |delta| is structured
_STRUCT_REL = 0.02  # |delta|s within this share of the median |delta| (plus float16 rounding) are one
# Class flips among near-duplicates are evidence while benign near-duplicate pairs of the reference differ in class
# at most this often (AdversarialArtifact.p_flip), measured on at least _FLIP_PAIRS of them
_FLIP_BENIGN = 0.01
_FLIP_PAIRS = 20
# Probe hits (see ``AdversarialDetector._probe_pass``): the fingerprint's blocks in _PROBE_BANDS bands (consecutive
# blocks), each band a salted key into its own part of the global probe table.
_PROBE_BANDS = PROBE_BANDS
# a probe log entry: fingerprint (2 int64), uid, seq, ts, client slot, and the time of the probe hit it is or copies
# (_NO_SEQ: none): 56 bytes
_PROBE_COLS = 7
_REF = (1 << 48) - 1  # a probe table slot: the band's 16 fingerprint bits << 48 | (log position + 1); 0 = empty
_NO_SEQ = -(1 << 62)
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
#: every float16 bit pattern as float32: widening the ring's values is a table lookup (numpy's float16 casts
#: cost ~10 ns a value; a gather from this 256 KiB table is several times faster, and exact by construction)
_F16_TO_F32 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


class _Layout(NamedTuple):
    """A batch laid out per client by ``_process``: each client's ring contents (chronological), then its
    batch events, as float32 holding the float16-rounded values the ring stores."""

    e_z: npt.NDArray[np.float32]
    gslot: I64  #: client slot of each group (sorted)
    estart: I64  #: where each group starts in ``e_z``
    bstart: I64  #: where each group's batch events start in ``e_z``
    order: I64  #: batch rows sorted by client (stable)
    key: I64  #: ``slot * n + row`` of the rows in that order (ascending): a client's rows up to one are a range


# --------------------------------------------------------------------------------------------- artifact


#: Scalar fields of :class:`AdversarialArtifact` stored in the baseline's metadata.
_FLOAT_FIELDS = (
    "tau_near", "tau_knn", "tau_close", "p_close", "cos_line", "margin_low", "rate_max", "rate_tau_s", "p_ood",
    "volume_info", "cell",
)  # fmt: skip
_INT_FIELDS = ("k", "history", "n_reference")


@dataclass(eq=False)
class _Campaign:
    """A campaign's running state (mutable; :meth:`AdversarialDetector.snapshot` stores it as arrays)."""

    links: int  # hits counted for it (boundary, probe and walk), also the write position in ``ring``
    boundary_hits: int
    reported: int  # members at the last record (0: not reported yet)
    incident: int  # seq of the opening record (-1: none yet)
    members: list[str]
    ring: npt.NDArray[np.float32]  # (_CAMP_RING, d): the embeddings of its last hits
    probe_hits: int
    last_link: int  # seq of its latest linking probe hit (-1: none)
    walk_links: int  # linking walk steps (counted apart from the probe hits)
    level: int  # severity level of its last record (index into _SEV; 0: none)
    confirmed: int  # accounts whose second query, like their first, was a walk step (the second linking to it)
    last_ts: int  # stream time (largest event time so far, ms) at its latest hit

    STATS = (
        "links",
        "boundary_hits",
        "reported",
        "incident",
        "probe_hits",
        "last_link",
        "walk_links",
        "level",
        "confirmed",
        "last_ts",
    )


@dataclass(frozen=True)
class AdversarialArtifact:
    """Reference calibration of :class:`AdversarialDetector`, kept in the baseline.

    Distances are Euclidean in the space ``((x - center) / scale) @ projection``. Build one with
    :meth:`fit`.
    """

    center: F64
    scale: F64
    projection: F64
    tau_near: float  #: a query this close to an earlier one is a near-duplicate
    tau_knn: float  #: mean distance to the k nearest recent queries below this is tighter than benign
    tau_close: float  #: closer than benign clients come, but not a duplicate (synthetic extraction)
    p_close: float  #: benign rate of such "close" queries
    cos_line: float  #: |cos| of consecutive steps above this is a line search (2: none, benign steps line up)
    margin_low: float  #: top-1 minus top-2 probability below this is "on the boundary"
    rate_max: float  #: normal per-client rate ceiling, events/s (decayed with ``rate_tau_s``)
    rate_tau_s: float
    p_ood: float  #: benign rate of ood-flagged events
    volume_info: float  #: per-client volume at which full class coverage is noted
    cell: float  #: cell width of the global index (benign nearest pairs rarely share a cell)
    k: int
    history: int
    n_reference: int
    #: a step with at least this share of its changed coordinates moved by one amount is structured: a share above
    #: that of all but ``quantile`` of benign steps (above 1: never, as on binary features, whose steps all are)
    struct_share: float
    #: a step changing 1 to this many coordinates is structured: fewer than benign steps change (0: none)
    struct_coords: int
    #: a query differing from another client's in 1 to this many fingerprint blocks can be a probe hit: fewer than
    #: reference rows differ from their nearest other one (0: none, as on a few rare flags)
    probe_blocks: int
    #: share of benign near-duplicate pairs (copies included) predicted differently; above ``_FLIP_BENIGN`` a class
    #: flip is no evidence of a search (0: fewer than ``_FLIP_PAIRS`` such pairs to tell)
    p_flip: float
    #: mean squared norm of the reference rows' projections (their spread; NaN: no population gate)
    spread: float = float("nan")

    def to_arrays(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """Arrays and JSON metadata; :meth:`from_arrays` inverts it."""
        arrays: dict[str, npt.NDArray[Any]] = {
            "center": self.center,
            "scale": self.scale,
            "projection": self.projection,
        }
        meta: dict[str, Any] = {"format": FORMAT}
        meta.update({name: float(getattr(self, name)) for name in (*_FLOAT_FIELDS, "spread")})
        meta.update({name: int(getattr(self, name)) for name in (*_INT_FIELDS, "struct_coords", "probe_blocks")})
        meta["struct_share"] = float(self.struct_share)
        meta["p_flip"] = float(self.p_flip)
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any]], meta: Mapping[str, Any]) -> AdversarialArtifact:
        """Rebuild an artifact written by :meth:`to_arrays`."""
        if meta.get("format") != FORMAT:
            raise SnapshotError(f"adversarial artifact format {meta.get('format')!r} is not supported")
        try:
            center = np.asarray(arrays["center"], dtype=np.float64)
            return cls(
                center=center,
                scale=np.asarray(arrays["scale"], dtype=np.float64),
                projection=np.asarray(arrays["projection"], dtype=np.float64),
                **{n: float(meta[n]) for n in _FLOAT_FIELDS},  # type: ignore[arg-type]
                **{n: int(meta[n]) for n in _INT_FIELDS},
                # absent from baselines built before they existed
                struct_share=float(meta.get("struct_share", _STRUCT_SHARE)),
                struct_coords=int(meta.get("struct_coords", _fixed_coords(len(center)))),
                probe_blocks=int(meta.get("probe_blocks", _FP_BLOCKS)),
                p_flip=float(meta.get("p_flip", 0.0)),
                spread=float(meta.get("spread", float("nan"))),
            )
        except KeyError as e:
            raise SnapshotError(f"adversarial artifact lacks {e}") from e

    @property
    def n_features(self) -> int:
        return int(self.center.shape[0])

    def embed(self, x: F64, scratch: Scratch | None = None) -> npt.NDArray[np.float32]:
        """Project feature rows (NaN counts as the reference center); ``scratch`` holds the intermediates."""
        return embed(x, self.center, self.scale, self.projection, scratch)

    @classmethod
    def fit(
        cls,
        features: npt.ArrayLike,
        proba: npt.ArrayLike,
        *,
        client_id: npt.ArrayLike | None = None,
        ts: npt.ArrayLike | None = None,
        n_components: int = 16,
        history: int = 24,
        k: int = 6,
        quantile: float = 1e-3,
        p_ood: float = 1e-3,
        rate_tau_s: float = 60.0,
        rate_factor: float = 4.0,
        default_rate_max: float = 10.0,
        volume_info: float = 2000.0,
        seed: int = 0,
    ) -> AdversarialArtifact:
        """Calibrate on benign reference traffic.

        ``features`` (n, F) and ``proba`` (n, K) are reference events; with ``client_id`` and ``ts``
        (ms) the normal per-client rate is measured, else ``default_rate_max`` (events/s) is used.
        Benign query streams are simulated from the reference rows twice — in random order and
        sorted by predicted class (the worst benign case: a client of one class) — and, when
        ``client_id`` and ``ts`` are those of the rows (the same length), taken as the reference
        clients sent them, each client's rows in time order; the thresholds are set at ``quantile``
        of their neighbour statistics, halved for margin, and the benign rate of "close" queries is
        the larger of a one-class client's and that of the reference client (with ``history`` rows
        or more) who sent them most often.
        ``history`` (24) is the per-client window: long enough that an attacker mixing benign queries 1:1
        into a synthetic-extraction round (children 10 queries after their seeds) still has the seeds in it.
        """
        x = np.asarray(features, dtype=np.float64)
        p = np.asarray(proba, dtype=np.float64)
        if x.ndim != 2 or p.ndim != 2 or len(x) != len(p):
            raise ValueError("features must be (n, F) and proba (n, K) with the same n")
        if len(x) < 4 * history:
            raise ValueError(f"need at least {4 * history} reference rows, got {len(x)}")
        if not 1 <= k < history:
            raise ValueError("need 1 <= k < history")
        rng = np.random.default_rng(seed)
        center = np.nanmean(x, axis=0)
        std = np.nanstd(x, axis=0)
        pos = std[std > 0]
        floor = float(np.median(pos)) if len(pos) else 1.0  # near-constant features must not dominate
        scale = np.maximum(std, floor)
        proj = rng.normal(size=(x.shape[1], n_components)) / np.sqrt(n_components)
        art = cls(
            center,
            scale,
            proj,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            rate_tau_s,
            p_ood,
            volume_info,
            1.0,
            k,
            history,
            len(x),
            struct_share=_STRUCT_SHARE,
            struct_coords=0,
            probe_blocks=0,
            p_flip=0.0,
        )
        # the float16 values the detector's rings keep: on discrete features many benign distances sit exactly at
        # a threshold made from them (the "close" band's edge is the smallest benign step), and rounding decides
        z = art.embed(x).astype(np.float16).astype(np.float64)
        pred = np.argmax(np.nan_to_num(p, nan=-1.0), axis=1)
        d1s, knns, coss, nns = [], [], [], []
        orders = [rng.permutation(len(z)), np.lexsort((rng.random(len(z)), pred))]
        sequences = client_id is not None and ts is not None and len(client_id) == len(ts) == len(x)  # type: ignore[arg-type]
        if sequences:
            # the reference clients' own sequences, in time order: a real client's consecutive queries can be far
            # closer than random rows (a sensor's readings change slowly, a machine warms up along one direction)
            codes = np.unique(np.asarray(client_id, dtype=object).astype(str), return_inverse=True)[1]
            orders.append(np.lexsort((np.asarray(ts, dtype=np.int64), codes.reshape(-1))))
        for order in orders:
            d1, knn, cs, nn = _stream_stats(z[order], history, k)
            nns.append(nn)
            d1s.append(d1)
            knns.append(knn)
            coss.append(cs)
        d1_all = np.concatenate(d1s)
        d1_all = d1_all[np.isfinite(d1_all) & (d1_all > 0)]
        knn_all = np.concatenate(knns)
        knn_all = knn_all[np.isfinite(knn_all) & (knn_all > 0)]
        cos_all = np.concatenate(coss)
        cos_all = cos_all[np.isfinite(cos_all)]
        tau_near = 0.5 * float(np.quantile(d1_all, quantile))
        tau_knn = 0.5 * float(np.quantile(knn_all, quantile))
        d1c = d1s[1][np.isfinite(d1s[1])]  # a client of one class
        tau_close = max(float(np.quantile(d1c, 0.01)), 2 * tau_near)
        close = (d1c >= tau_near) & (d1c < tau_close)
        p_close = max(float(np.mean(close)), 0.01)
        if sequences:
            # the test is per client: the closest-sending reference client with a full history sets the rate (a
            # slow sensor's readings are close more often than the average sensor's), at the lower 5% bound of its
            # rate (the largest of many clients' plain rates is mostly sampling noise when they all send alike)
            g = codes.reshape(-1)[orders[2]]
            first = np.r_[True, g[1:] != g[:-1]]  # (compared with the client before)
            sent = np.bincount(g[~first], minlength=g.max() + 1)
            near_close = (d1s[2] >= tau_near) & (d1s[2] < tau_close) & ~first
            hits = np.bincount(g[near_close], minlength=g.max() + 1)
            full = sent >= history
            if (hits[full] > 0).any():
                h, m = hits[full], sent[full]
                lower = stats.beta.ppf(0.05, np.maximum(h, 1), m - h + 1)
                p_close = max(p_close, float(np.where(h > 0, lower, 0.0).max()))
        # near-duplicates (copies included) predicted differently: a boundary being walked, unless the model's
        # class rests on what the detector does not see (categorical fields, features joined server-side): then
        # benign near-duplicates differ in class too, and a class flip is no evidence
        n_near = n_flip = 0
        for o, d1, nn in zip(orders, d1s, nns, strict=True):
            near = d1 < tau_near
            n_near += int(near.sum())
            n_flip += int((pred[o[near]] != pred[o[nn[near]]]).sum())
        p_flip = n_flip / n_near if n_near >= _FLIP_PAIRS else 0.0
        cos_q = float(np.quantile(cos_all, 1 - quantile)) if len(cos_all) else 0.0
        # in a few dimensions benign steps line up too (in 2, one in eleven is within 8 degrees of the last one): a
        # line test they pass more often than ``quantile`` tells nothing, and is off (|cos| never exceeds 2)
        cos_line = float(min(0.99, max(0.9, cos_q + 0.05))) if cos_q < 0.99 else 2.0
        top2 = -np.sort(-np.nan_to_num(p, nan=0.0), axis=1)[:, :2] if p.shape[1] >= 2 else np.ones((len(p), 2))
        margin = top2[:, 0] - top2[:, 1]
        margin_low = float(np.quantile(margin, 0.01))
        rate_max = default_rate_max
        if client_id is not None and ts is not None:
            peaks = _peak_rates(np.asarray(client_id, dtype=object), np.asarray(ts, dtype=np.int64), rate_tau_s)
            if len(peaks):
                rate_max = rate_factor * float(np.quantile(peaks, 1 - quantile))
        cell = _cell_width(z, 2.0 * tau_near, rng)
        spread = float(np.mean((z**2).sum(axis=1)))
        struct_share, struct_coords, probe_blocks = _step_limits(x, orders, rng, quantile)
        return cls(
            center,
            scale,
            proj,
            tau_near,
            tau_knn,
            tau_close,
            p_close,
            cos_line,
            margin_low,
            rate_max,
            rate_tau_s,
            p_ood,
            volume_info,
            cell,
            k,
            history,
            len(x),
            struct_share,
            struct_coords,
            probe_blocks,
            p_flip,
            spread,
        )


def _cell_width(z: F64, upper: float, rng: np.random.Generator, target: float = 1e-3) -> float:
    """Largest index cell width (<= ``upper``) at which a benign query and its nearest reference neighbour
    share a randomly offset cell of one randomly rotated table with probability <= ``target``."""
    zz = z[rng.permutation(len(z))[:2000]]
    d2 = ((zz[:, None, :] - zz[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    delta = zz - zz[np.argmin(d2, axis=1)]
    dd = z.shape[1]
    rot = np.abs(np.stack([delta @ (rng.normal(size=(dd, dd)) / np.sqrt(dd)) for _ in range(4)]))
    w = upper
    for _ in range(60):
        share = np.prod(np.maximum(0.0, 1.0 - rot / w), axis=-1).mean()
        if share <= target:
            return float(w)
        w *= 0.8
    return float(w)


def _stream_stats(z: F64, history: int, k: int) -> tuple[F64, F64, F64, I64]:
    """Per row of a simulated client stream: distance to the nearest of the previous ``history``
    rows, mean distance to the ``k`` nearest, |cos| between consecutive steps, and which row the
    nearest is (-1: none)."""
    n = len(z)
    d1 = np.full(n, np.inf)
    knn = np.full(n, np.inf)
    nn = np.full(n, -1, dtype=np.int64)
    for s in range(0, n, 512):
        e = min(n, s + 512)
        lo = max(0, s - history)
        dd = np.sqrt(np.maximum(((z[s:e, None, :] - z[None, lo:e, :]) ** 2).sum(-1), 0))
        rows = np.arange(s, e)[:, None]
        cols = np.arange(lo, e)[None, :]
        dd[(cols >= rows) | (cols < rows - history)] = np.inf
        d1[s:e] = dd.min(axis=1)
        nn[s:e] = np.where(np.isfinite(d1[s:e]), lo + dd.argmin(axis=1), -1)
        part = np.sort(dd, axis=1)[:, :k]
        knn[s:e] = np.where(np.isfinite(part).all(axis=1), part.mean(axis=1), np.inf)
    step = np.diff(z, axis=0)
    nrm = np.linalg.norm(step, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cs = np.abs((step[1:] * step[:-1]).sum(1) / (nrm[1:] * nrm[:-1]))
    return d1, knn, cs, nn


def _fixed_coords(f: int) -> int:
    """The few-coordinates limit of a structured step before it was calibrated (baselines without
    ``struct_coords`` keep it), and the most the calibration gives."""
    return max(2, f // 8)


def _step_limits(x: F64, orders: Iterable[I64], rng: np.random.Generator, quantile: float) -> tuple[float, int, int]:
    """Limits of the structured-step and probe tests that benign traffic stays within: ``(share, coords, blocks)``.

    Each row of the simulated client streams (``orders`` of the reference rows) is compared with the ``_RAW`` rows
    before it that differ from it, as the detector compares a query with its client's last queries. ``coords`` is
    below the number of float16 values (scaled to F, as in the detector's test) that all but ``quantile`` of these
    steps change, at most ``_fixed_coords(F)``; ``share`` is above the share of changed values moved by one amount in
    all but ``quantile`` of the others, at least ``_STRUCT_SHARE``. ``blocks`` is below the number of fingerprint
    blocks in which any of (at most 1,000) reference rows differs from its nearest other reference row that is not a
    copy, at most 32. On continuous features ``share`` and ``coords`` are the fixed limits and ``blocks`` is above
    the detector's own; on discrete ones (binary flags, small counts) benign steps change few values, all by one
    amount, and rows often differ from another in a column or two."""
    n, f = x.shape
    cols = np.arange(f) if f <= _RAW_COLS else np.sort(rng.choice(f, _RAW_COLS, replace=False))
    with np.errstate(over="ignore"):  # as the detector's raw values (see QueryFeaturizer)
        v16 = x[:, cols].astype(np.float16).view(np.uint16)
    # an id per distinct content of each block (columns i % 32, exact bits as in the fingerprint): two rows differ in
    # a block exactly when its ids differ
    bits = np.ascontiguousarray(x).view(np.uint64)
    ids = np.zeros((n, _FP_BLOCKS), dtype=np.int32)
    for j in range(min(f, _FP_BLOCKS)):
        ids[:, j] = np.unique(bits[:, j::_FP_BLOCKS], axis=0, return_inverse=True)[1].reshape(-1)
    pairs = []
    for order in orders:
        for r in range(1, _RAW + 1):
            a, b = order[r:], order[:-r]
            moved = (ids[a] != ids[b]).any(axis=1)
            pairs.append((a[moved], b[moved]))
    a = np.concatenate([p[0] for p in pairs])
    b = np.concatenate([p[1] for p in pairs])
    nnz = (v16[a] != v16[b]).sum(axis=1) * (f / len(cols))
    coords = _fixed_coords(f)
    if len(nnz):
        coords = max(0, min(coords, math.ceil(float(np.quantile(nnz, quantile, method="lower"))) - 1))
    dense = nnz > coords
    share = _STRUCT_SHARE
    if dense.any():
        q = float(np.quantile(_step_share(v16[a[dense]], v16[b[dense]]), 1 - quantile, method="higher"))
        share = max(share, float(np.nextafter(q, np.inf)))
    sample = rng.choice(n, 1000, replace=False) if n > 1000 else np.arange(n)
    nearest = np.empty(len(sample), dtype=np.int64)
    step = max(1, min(64, (1 << 22) // (n * _FP_BLOCKS)))
    for s in range(0, len(sample), step):
        ch = (ids[sample[s : s + step], None, :] != ids[None, :, :]).sum(axis=2)
        ch[ch == 0] = _FP_BLOCKS + 1  # the row itself and its copies (a copy is no probe hit)
        nearest[s : s + step] = ch.min(axis=1)
    # the probe log holds far more queries than the reference (2**18 by default): a benign pair seen here at all is
    # frequent there, so the limit is below every nearest pair, not a quantile
    return share, coords, max(0, min(_FP_BLOCKS, int(nearest.min()) - 1))


def _step_share(ua: npt.NDArray[np.uint16], ub: npt.NDArray[np.uint16]) -> F64:
    """Per pair of rows of float16 bit patterns (both overwritten): the share of the values that differ which moved
    by the median |delta| (within ``_STRUCT_REL`` of it plus float16 rounding); 0 where fewer than two differ or the
    rounding is a sizeable share of the median (a step cannot be told from noise)."""
    n, fs = ua.shape
    a, b = _widen16(ua), _widen16(ub)
    # float16 rounding of the row's values, twice over (a coordinate's |delta| and the median's): from the largest
    # magnitude (the bit patterns without the sign order like the magnitudes; NaN: no test)
    ua &= np.uint16(0x7FFF)
    ub &= np.uint16(0x7FFF)
    top = _widen16(np.maximum(ua.max(axis=1), ub.max(axis=1)))
    with np.errstate(invalid="ignore"):  # inf - inf (float16 overflow) counts as no change
        d = np.subtract(a, b, out=a)
        np.abs(d, out=d)
        moved = d > 0
        np.fmax(d, 0.0, out=d)  # NaN (no change) to 0; d >= 0 otherwise
        k = moved.view(np.uint8).sum(axis=1, dtype=np.uint8).astype(np.int64)  # (a sign of zero or NaN: none)
        med = np.sort(d, axis=1)[np.arange(n), fs - k + (k - 1) // 2]  # zeros sort first
        rnd = top * np.float32(2.0**-9)
        tol = _STRUCT_REL * med + rnd  # below med (rnd <= med / 4): unchanged coordinates never agree
        agree = np.abs(np.subtract(d, med[:, None], out=b), out=b) <= tol[:, None]
        n_agree = agree.view(np.uint8).sum(axis=1, dtype=np.uint8)
    # (an infinite median, from values beyond float16's range, tells nothing and would let every value agree)
    ok = (k >= 2) & (rnd <= 0.25 * med) & np.isfinite(med)
    return np.where(ok, n_agree / np.maximum(k, 1), 0.0)


def _peak_rates(client: npt.NDArray[np.object_], ts: I64, tau_s: float) -> F64:
    """Peak exponentially decayed rate (events/s) of every reference client."""
    order = np.lexsort((ts, client.astype(str)))
    c = client[order]
    t = ts[order].astype(np.float64) / 1000.0
    peaks = []
    start = 0
    for i in range(1, len(c) + 1):
        if i == len(c) or c[i] != c[start]:
            r = 0.0
            pk = 0.0
            prev = t[start]
            for j in range(start, i):
                r = r * np.exp(-(t[j] - prev) / tau_s) + 1.0
                prev = t[j]
                pk = max(pk, r)
            peaks.append(pk / tau_s)
            start = i
    return np.asarray(peaks)


def _quiet_run(
    lv: npt.NDArray[np.integer[Any]],
    calm_now: npt.NDArray[np.bool_],
    cur: int,
    cool: int,
    calm: int,
    resolve_after: int,
) -> tuple[int, int] | None:
    """``(cool, calm)`` after a client's run of events when the incident state machine emits nothing
    on it (no open, update or resolved record), else ``None``: the caller then steps event by event.

    ``lv`` are the run's alert levels of one kind, ``calm_now`` whether each event is calm, and
    ``cur``, ``cool``, ``calm`` the state before the run (level, cooldown and calm streak).
    """
    m = len(lv)
    if cur == 0:
        # an event opens an incident when it has a level once the cooldown has run out (index >= cool)
        return None if lv[cool:].any() else (max(cool - m, 0), 0)
    if (lv > cur).any():
        return None
    breaks = np.flatnonzero(~calm_now)
    if len(breaks) == 0:
        longest = final = calm + m
    else:
        final = m - 1 - int(breaks[-1])
        lead = calm + int(breaks[0]) if breaks[0] else 0  # the streak values reached before the first break
        longest = max(lead, int(np.diff(breaks).max(initial=1)) - 1, final)
    return None if longest >= resolve_after else (max(cool - m, 0), final)


def _rows(a: npt.NDArray[Any]) -> npt.NDArray[np.void]:
    """A C-contiguous array as a 1-D view of its rows (along the first axis), each row one opaque item.

    ``np.take`` / ``np.put`` on it move whole rows about 10x faster than fancy indexing of the n-D array,
    which walks the row's subspace item by item. The values moved are the same bytes.
    """
    if not a.flags.c_contiguous:
        raise ValueError("row view of a non-contiguous array")  # a reshape would copy: writes would be lost
    r = a.reshape(len(a), int(np.prod(a.shape[1:], dtype=np.int64)))  # (not -1: a may have no rows)
    return r.view(np.dtype((np.void, r.shape[1] * r.itemsize))).reshape(-1)


def _take_rows(a: npt.NDArray[Any], idx: npt.NDArray[np.integer[Any]]) -> npt.NDArray[Any]:
    """``a[idx]`` for a C-contiguous ``a`` and 1-D integer ``idx`` (see :func:`_rows`)."""
    out: npt.NDArray[Any] = np.take(_rows(a), idx).view(a.dtype).reshape(len(idx), *a.shape[1:])
    return out


def _put_rows(a: npt.NDArray[Any], idx: npt.NDArray[np.integer[Any]], v: npt.NDArray[Any]) -> None:
    """``a[idx] = v`` for a C-contiguous ``a``, 1-D integer ``idx`` without repeats, and rows ``v``."""
    np.put(_rows(a), idx, _rows(np.ascontiguousarray(v, dtype=a.dtype)))


def _lag_dist(
    e_zp: npt.NDArray[np.float32],
    cur: npt.NDArray[np.float32],
    p: I64,
    n_hist: I64,
    out: npt.NDArray[np.float32],
    scratch: Scratch,
) -> None:
    """Distances of each event to the rows before it: ``out[i, j]`` is the Euclidean distance between ``cur[p[i]]``
    and row ``p[i] - 1 - j`` of the laid-out queries (``e_zp`` without its leading padding), for ``j < out.shape[1]``
    and ``j < n_hist[i]`` (the other entries are left to the caller, which masks them).

    One lag at a time over every row of the layout: contiguous slices instead of gathering a window per event
    (several times faster; the rows that are not events, or whose lag leaves the client, are computed too). A lag
    that few events reach (many clients with short histories) gathers those events' rows instead. Each squared
    distance is ``einsum`` over the contiguous feature axis, as a gathered window's would be, so the float32
    rounding is the same either way.
    """
    total = len(cur)
    pad = len(e_zp) - total
    diff = scratch.get("lag.diff", cur.shape, np.float32)
    sq = scratch.get("lag.sq", (total,), np.float32)
    rows = _rows(e_zp)
    with np.errstate(invalid="ignore", over="ignore"):  # rows masked later may hold float16 overflows (inf)
        for j in range(out.shape[1]):
            sel = np.flatnonzero(n_hist > j)
            if 4 * len(sel) >= total:
                np.subtract(e_zp[pad - 1 - j : pad - 1 - j + total], cur, out=diff)
                np.einsum("qd,qd->q", diff, diff, out=sq)
                out[:, j] = np.take(sq, p)
            elif len(sel):
                ps = p[sel]
                d = np.take(rows, ps + (pad - 1 - j)).view(np.float32).reshape(len(sel), -1)
                d -= _take_rows(cur, ps)
                out[sel, j] = np.einsum("qd,qd->q", d, d)
    np.sqrt(out, out=out)


def _widen16(a: npt.NDArray[np.float16] | npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    """``a.astype(np.float32)`` of float16 values or their bit patterns, by table lookup (see ``_F16_TO_F32``)."""
    out: npt.NDArray[np.float32] = np.take(_F16_TO_F32, np.ascontiguousarray(a).view(np.uint16))
    return out


def _stable_order(a: I64) -> tuple[I64, I64]:
    """``np.argsort(a, kind="stable")`` and ``a`` in that order, for non-negative ``a`` with ``a.max() * len(a)``
    below ``2**63``: sorting ``a * len(a) + index`` (distinct keys, so any sort is stable) with numpy's
    vectorized quicksort is ~4x faster than the stable (merge/timsort) argsort."""
    n = len(a)
    c = a * n + np.arange(n, dtype=np.int64)
    c.sort()
    return c % n if n else c, c // n if n else c


def _run_state(calm_now: npt.NDArray[np.bool_], cur: int, cool: int, calm: int) -> tuple[int, int]:
    """``(cool, calm)`` after a run of events on which the incident state machine emits nothing: the cooldown
    counts down, the calm streak grows on calm events while an incident is open and restarts at 0 otherwise."""
    m = len(calm_now)
    if m == 0:
        return cool, calm
    if cur == 0:
        return max(cool - m, 0), 0
    breaks = np.flatnonzero(~calm_now)
    return max(cool - m, 0), calm + m if len(breaks) == 0 else m - 1 - int(breaks[-1])


def _next_record(
    lv: npt.NDArray[np.integer[Any]],
    calm_now: npt.NDArray[np.bool_],
    cur: int,
    cool: int,
    calm: int,
    resolve_after: int,
) -> tuple[int, Status] | None:
    """Index and status of the first event of a client's run that makes the incident state machine emit a
    record of one kind, from state ``cur`` (level), ``cool`` (cooldown) and ``calm`` (calm streak); ``None``
    if none does. See ``AdversarialDetector._process`` for the machine."""
    m = len(lv)
    if cur == 0:
        # opens at the first event with a level once the cooldown has run out (index >= cool)
        hit = np.flatnonzero(lv[cool:] > 0) if cool < m else np.zeros(0, dtype=np.intp)
        return (cool + int(hit[0]), "open") if len(hit) else None
    up = np.flatnonzero(lv > cur)
    t_up = int(up[0]) if len(up) else m
    # calm streak after each event before the update: restarted by every non-calm event
    idx = np.arange(t_up)
    last_break = np.maximum.accumulate(np.where(calm_now[:t_up], -1, idx)) if t_up else idx
    streak = np.where(last_break < 0, calm + idx + 1, idx - last_break)
    res = np.flatnonzero(streak >= resolve_after)
    if len(res):
        return int(res[0]), "resolved"
    return (t_up, "update") if t_up < m else None


_EPOCH = 64  # decayed rates are summed in units of 2**(_EPOCH * epoch): exact rescaling between epochs
_EPOCH_SPAN = 13  # epochs one client may span inside a batch before the rate falls back to a plain recursion


def _rate_coords(t_ms: npt.ArrayLike, tau_ms: float) -> tuple[I64, F64]:
    """Time in decay units of log2, ``t / (tau ln 2)``, split into the epoch (``_EPOCH`` units each) and the
    offset in it, ``[0, _EPOCH)``: a function of the time alone, so every batching computes the same values."""
    u = np.asarray(t_ms, dtype=np.float64) / (tau_ms * np.log(2.0))
    ep = np.floor(u / _EPOCH)
    return ep.astype(np.int64), u - ep * _EPOCH


def _seg_cumsum(x: F64, starts: I64, lens: I64, carry: F64) -> F64:
    """Per-group running sums of ``x`` (groups laid out contiguously), each started from ``carry`` and added
    strictly left to right, so the result does not depend on what else the batch holds (a global cumsum minus
    an offset rounds differently). Groups are padded to the next power of two and accumulated along rows."""
    out = np.empty(len(x))
    width = np.left_shift(1, np.ceil(np.log2(np.maximum(lens, 1))).astype(np.int64))
    for wd in np.unique(width).tolist():
        g = np.flatnonzero(width == wd)
        col = np.arange(wd)
        m = col[None, :] < lens[g][:, None]
        idx = (starts[g][:, None] + col[None, :])[m]
        a = np.zeros((len(g), wd + 1))
        a[:, 0] = carry[g]
        a[:, 1:][m] = x[idx]
        np.cumsum(a, axis=1, out=a)
        out[idx] = a[:, 1:][m]
    return out


def _chain_sums(nxt: I64, val: I64) -> I64:
    """Per node of linked chains (``nxt[i]``: the next node of ``i``'s chain, -1: ``i`` ends it), the sum of ``val``
    from the node to its chain's end, both included: pointer jumping, log2 of the longest chain passes (a chain of
    exact copies, or of exact re-sends, can run through a whole batch)."""
    acc = val.copy()
    while (nxt >= 0).any():
        live = nxt >= 0
        at = np.maximum(nxt, 0)
        acc += np.where(live, acc[at], 0)
        nxt = np.where(live, nxt[at], -1)
    return acc


def _decayed_rates(tmax: I64, ep0: I64, acc0: F64, gstarts: I64, m_g: I64, tau_ms: float) -> tuple[F64, F64]:
    """Per event (grouped by client): the decayed count ``sum_j exp(-(t - t_j) / tau)`` of its client's events
    so far, and the running sum it comes from, in units of ``2**(_EPOCH * epoch(t))``.

    Row by row this is ``acc = acc * 2**(-_EPOCH * (epoch - previous epoch)) + 2**offset``; scaling by a power of
    two is exact, so summing a client's batch events in the units of its first epoch gives bit-identical values:
    the rate does not depend on batch boundaries or on a snapshot/restore in between. ``acc0`` is each client's
    sum before the batch in the units of epoch ``ep0``.
    """
    ep, frac = _rate_coords(tmax, tau_ms)
    gid = np.repeat(np.arange(len(gstarts)), m_g)
    e1 = ep[gstarts]
    carry = np.ldexp(acc0, -_EPOCH * (e1 - ep0))
    d = ep - e1[gid]
    far = np.maximum.reduceat(d, gstarts) > _EPOCH_SPAN if len(gstarts) else np.zeros(0, dtype=bool)
    d = np.where(far[gid], 0, d)  # those groups are redone below (their sums would overflow)
    v = np.exp2(frac)
    acc = np.ldexp(_seg_cumsum(np.ldexp(v, _EPOCH * d), gstarts, m_g, carry), -_EPOCH * d)
    for g in np.flatnonzero(far).tolist():  # a client spanning > ~570 decay times in one batch
        a, prev = float(carry[g]), int(e1[g])
        for q in range(int(gstarts[g]), int(gstarts[g] + m_g[g])):
            a = float(np.ldexp(a, -_EPOCH * (int(ep[q]) - prev))) + float(v[q])
            prev = int(ep[q])
            acc[q] = a
    return acc, acc * np.exp2(-frac)


# --------------------------------------------------------------------------------------------- sketch


class SpaceSaving:
    """Mergeable Space-Saving summary of the heaviest keys (Metwally et al. 2005; Agarwal et al. 2012).

    Counts are over-estimates by at most ``error``; any key with true count above ``total / capacity``
    is kept.

    Examples
    --------
    >>> s = SpaceSaving(2)
    >>> s.add(np.array(["a", "b", "a", "c", "a"], dtype=object))
    >>> s.top(1)
    [('a', 3, 0)]
    """

    def __init__(self, capacity: int = 64) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.keys: npt.NDArray[np.str_] = np.empty(0, dtype=str)
        self.counts: I64 = np.empty(0, dtype=np.int64)
        self.errors: I64 = np.empty(0, dtype=np.int64)
        self.total = 0

    def add(self, keys: npt.NDArray[Any]) -> None:
        """Count a batch of keys (one merge of the batch's exact counts into the summary)."""
        if len(keys) == 0:
            return
        uk, cnt = np.unique(np.asarray(keys).astype(str), return_counts=True)
        self.add_counts(uk, cnt, len(keys))

    def add_counts(self, uk: npt.NDArray[Any], cnt: I64, n: int) -> None:
        """Merge exact counts ``cnt`` of distinct keys ``uk`` from a batch of ``n`` events. Keys that cannot
        make the summary may be left out of ``uk`` (see :meth:`candidates`)."""
        uk = np.asarray(uk).astype(str)
        self.total += n
        floor = int(self.counts.min()) if len(self.counts) >= self.capacity else 0
        allk = np.concatenate([self.keys, uk])
        u, inv = np.unique(allk, return_inverse=True)
        c = np.zeros(len(u), dtype=np.int64)
        err = np.zeros(len(u), dtype=np.int64)
        np.add.at(c, inv[: len(self.keys)], self.counts)
        np.add.at(err, inv[: len(self.keys)], self.errors)
        known = np.zeros(len(u), dtype=bool)
        known[inv[: len(self.keys)]] = True
        new = inv[len(self.keys) :]
        c[new] += cnt
        fresh = new[~known[new]]
        c[fresh] += floor
        err[fresh] += floor
        keep = np.lexsort((u, -c))[: self.capacity]
        self.keys, self.counts, self.errors = u[keep], c[keep], err[keep]

    def candidates(self, cnt: I64, known: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
        """Indices of the batch keys that can enter the summary: every known key, and the unknown keys whose
        count reaches the ``capacity``-th largest unknown count (all unknown keys start from the same floor)."""
        unk = np.flatnonzero(~known)
        if len(unk) > self.capacity:
            kth = np.partition(cnt[unk], len(unk) - self.capacity)[len(unk) - self.capacity]
            unk = unk[cnt[unk] >= kth]
        return np.sort(np.concatenate([np.flatnonzero(known), unk]))

    def top(self, n: int) -> list[tuple[str, int, int]]:
        """The ``n`` heaviest keys as (key, estimated count, maximal over-estimate)."""
        return [
            (str(k), int(c), int(e)) for k, c, e in zip(self.keys[:n], self.counts[:n], self.errors[:n], strict=True)
        ]


# --------------------------------------------------------------------------------------------- detector


class AdversarialDetector:
    """Streaming per-client detector of evasion search, model extraction and query floods.

    Parameters
    ----------
    artifact
        Reference calibration (:meth:`AdversarialArtifact.fit`).
    max_clients
        Cap on tracked clients; when full, the least recently seen clients are evicted (clients
        with an open incident count as seen ``protect_s`` later), in chunks of ``evict_chunk``.
    history
        Queries kept per client (default: the artifact's).
    salt
        Secret for the global LSH index (quantization offsets and hash keys).
    pseudonymize_key
        If given, alerts name clients by ``HMAC-SHA256(key, client_id)`` (``"p-" + 16 hex``).
    seed
        Seed for the index's projections (mixed with the salt).
    evasion_threshold
        CUSUM level of search evidence at which ``evasion_probing`` opens (critical at 3x).
    alpha
        Per-test significance of the extraction binomial tests (the false-alarm budget per client check).
    min_events
        Events of a client before the close-query test may fire.
    min_share
        Effect gate of the extraction tests: at least this share of the client's queries are ood / close (benign
        clients stay far below: at most 3% close in the benchmark; synthetic extraction mixed 1:1 with natural
        queries sits near 25%).
    resolve_after, cooldown
        Calm events of a client before ``resolved``; events after that before the kind may reopen.
    index_bits, index_tables, index_match, index_horizon
        Global index: ``2**index_bits`` slots per table, ``index_tables`` tables, a query matches a
        stored one sharing ``index_match`` cells; entries older than ``index_horizon`` events expire.
    campaign_clients, campaign_hits
        A campaign is reported once it links this many clients through this many boundary hits (or
        walk steps of which the last four lie on one line).
    campaign_radius
        A new cross-client pair within ``campaign_radius * tau_close`` of a campaign's last query joins it.
    campaign_share
        A client joins a campaign only while at least this share of its queries (and at least two) are
        cross-client boundary hits.
    probe_bits, probe_log_bits, probe_blocks, probe_window_s, probe_share
        Probe table: ``2**probe_bits`` slots per band (8 bands) pointing into a log of the last
        ``2**probe_log_bits`` queries. A query whose fingerprint differs from another
        client's query of the last ``probe_window_s`` seconds in 1 to ``probe_blocks`` of its 32 blocks (fewer
        where the artifact's :attr:`~AdversarialArtifact.probe_blocks` is lower: benign reference rows come that
        close to each other, as on discrete features) is a probe hit; it links the two clients into a campaign
        while each one's probe hits (as either side) are at least ``probe_share`` of its queries, and a client is
        listed once they are also at least two (see :meth:`_probe_edges`). A *walk step* (a new input, no copy of
        a logged one, flagged ood) that the global index matches with another client's walk step counts as a probe
        hit too: the steps of a search that moves every coordinate a little (Boundary, HopSkipJump, Sign-OPT) leave
        the distribution, one account after another.
    ood_window
        Extraction split over accounts: the queries of accounts all of whose queries so far are ood, among the
        last ``ood_window`` events, are tested against ``Binomial(ood_window, p_ood)`` (the artifact's reference
        ood rate) at ``alpha``; once at least ``campaign_clients`` such accounts make it significant, a
        ``model_extraction`` campaign alert lists them (see :meth:`_ood_campaign`).
    campaign_quiet_s
        An evasion campaign is ``resolved`` once this much event time passes without a hit (the extraction
        campaign: once ``ood_window`` events pass without a significant window); a later hit starts another.
    campaign_interval_s
        Accounts joining the extraction campaign later are named by an ``update`` at most this often (seconds of event
        time; at once when ``campaign_members`` have joined): the records of an extraction spread over
        thousands of accounts come at a bounded rate, not one per handful of accounts.
    ood_threshold
        Scores ``>=`` this count as out-of-distribution when ``ood`` is given as scores.
    heavy_hitters
        Capacity of the Space-Saving sketch.
    ignore_clients
        Client ids whose events are skipped, like events without one: internal batch jobs, load tests and health
        checks that would otherwise be floods or heavy hitters.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(size=(400, 8))
    >>> pr = rng.dirichlet(np.ones(3), size=400)
    >>> art = AdversarialArtifact.fit(ref, pr)
    >>> det = AdversarialDetector(art, max_clients=100, salt=b"s")
    >>> x = ref[:1] + rng.normal(scale=1e-3, size=(30, 8)) * np.arange(30)[:, None] / 30
    >>> p = np.tile([[0.5, 0.49, 0.01], [0.49, 0.5, 0.01]], (15, 1))
    >>> b = EventBatch.from_arrays(x, client_id=["eve"] * 30, proba=p, prediction_code=p.argmax(1))
    >>> [(a.kind, a.status, a.severity, a.client_id, a.event_index) for a in det.update(b, seq=0)]
    [('evasion_probing', 'open', 'warning', 'eve', 4), ('evasion_probing', 'update', 'critical', 'eve', 9)]
    """

    def __init__(
        self,
        artifact: AdversarialArtifact,
        *,
        max_clients: int = 1_000_000,
        history: int | None = None,
        salt: bytes,
        pseudonymize_key: bytes | None = None,
        seed: int = 0,
        evasion_threshold: float = 4.0,
        alpha: float = 1e-7,
        min_events: int = 8,
        min_share: float = 0.15,
        resolve_after: int = 64,
        cooldown: int = 256,
        protect_s: float = 3600.0,
        evict_chunk: int | None = None,
        index_bits: int = 18,
        index_tables: int = 4,
        index_match: int = 2,
        index_horizon: int = 1_000_000,
        campaign_clients: int = 3,
        campaign_hits: int = 6,
        campaign_radius: float = 2.0,
        campaign_share: float = 0.25,
        probe_bits: int = 16,
        probe_log_bits: int = 18,
        probe_blocks: int = 4,
        probe_window_s: float = 300.0,
        probe_share: float = 0.5,
        max_campaigns: int = 1024,
        campaign_members: int = 256,
        campaign_interval_s: float = 2.0,
        campaign_quiet_s: float = 300.0,
        ood_window: int = 1024,
        ood_threshold: float = 0.5,
        heavy_hitters: int = 64,
        ignore_clients: Iterable[str] = (),
    ) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        if not isinstance(salt, bytes) or not salt:
            raise ValueError("salt must be non-empty bytes (a secret from configuration)")
        if pseudonymize_key is not None and not isinstance(pseudonymize_key, bytes):
            raise ValueError("pseudonymize_key must be bytes or None")
        h = artifact.history if history is None else history
        if not artifact.k < h <= 255:
            raise ValueError(f"history must be in ({artifact.k}, 255], got {h}")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if evasion_threshold <= 0:
            raise ValueError("evasion_threshold must be > 0")
        if not 1 <= index_match <= index_tables:
            raise ValueError("need 1 <= index_match <= index_tables")
        if not 8 <= index_bits <= 28:
            raise ValueError("index_bits must be in [8, 28]")
        if not 8 <= probe_bits <= 24 or not 8 <= probe_log_bits <= 28:
            raise ValueError("probe_bits must be in [8, 24] and probe_log_bits in [8, 28]")
        if not 1 <= probe_blocks < _FP_BLOCKS // 4:
            raise ValueError(f"probe_blocks must be in [1, {_FP_BLOCKS // 4})")
        if probe_window_s <= 0 or not 0 < probe_share <= 2:
            raise ValueError("need probe_window_s > 0 and 0 < probe_share <= 2")
        if ood_window < 16:
            raise ValueError(f"ood_window must be >= 16, got {ood_window}")
        if not campaign_interval_s >= 0 or not campaign_quiet_s > 0:
            raise ValueError("need campaign_interval_s >= 0 and campaign_quiet_s > 0")
        self.artifact = artifact
        self.max_clients = max_clients
        self.history = h
        self.salt = salt
        self.pseudonymize_key = pseudonymize_key
        self.seed = seed
        self.evasion_threshold = evasion_threshold
        self.alpha = alpha
        self.min_events = min_events
        self.min_share = min_share
        self.resolve_after = resolve_after
        self.cooldown = cooldown
        self.protect_s = protect_s
        self.evict_chunk = max(1, max_clients // 256) if evict_chunk is None else evict_chunk
        self.index_bits = index_bits
        self.index_tables = index_tables
        self.index_match = index_match
        self.index_horizon = index_horizon
        self.campaign_clients = campaign_clients
        self.campaign_hits = campaign_hits
        self.campaign_radius = campaign_radius
        self.campaign_share = campaign_share
        self.probe_bits = probe_bits
        self.probe_log_bits = probe_log_bits
        self.probe_blocks = probe_blocks
        self._probe_limit = min(probe_blocks, artifact.probe_blocks)
        self._flips = bool(artifact.p_flip <= _FLIP_BENIGN)
        # bands of blocks that hold a column: with fewer than 29 features the last bands are empty, match every
        # query, and the 4-bit block hashes of two unrelated queries then agree often enough to look like a probe
        self._bands = min(_PROBE_BANDS, -(-min(artifact.n_features, _FP_BLOCKS) // (_FP_BLOCKS // _PROBE_BANDS)))
        self.probe_window_s = probe_window_s
        self.probe_share = probe_share
        self.max_campaigns = max_campaigns
        self.ood_window = ood_window
        # events of ood-only accounts in the window at which the binomial tail falls below alpha (alpha**2: critical):
        # benign traffic sends ood queries at the reference rate, and these accounts' queries are a subset of them
        kk = np.arange(1, ood_window + 2)
        tail = stats.binom.sf(kk - 1, ood_window, artifact.p_ood)
        self._ood_tail = tail  # (the p-value of a count: tail[count - 1])
        self._ood_k = int(kk[np.argmax(tail < alpha)]) if (tail < alpha).any() else ood_window + 1
        self._ood_k2 = int(kk[np.argmax(tail < alpha**2)]) if (tail < alpha**2).any() else ood_window + 1
        self.campaign_members = campaign_members
        self.campaign_interval_s = campaign_interval_s
        self.campaign_quiet_s = campaign_quiet_s
        self.ood_threshold = ood_threshold
        self.heavy_hitters = heavy_hitters
        self.ignore_clients = frozenset(ignore_clients)
        # Salted index geometry: secret rotations, offsets and hash multipliers.
        key = hashlib.blake2b(salt, digest_size=16, person=b"inferwatch-adv").digest()
        irng = np.random.default_rng([int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little"), seed])
        dd = artifact.projection.shape[1]
        self._band = dd
        self._rot = irng.normal(size=(index_tables, dd, self._band)) / np.sqrt(self._band)
        self._off = irng.random(size=(index_tables, self._band))
        self._mult = (irng.integers(1, 2**62, size=(index_tables, self._band), dtype=np.uint64) * 2 + 1).astype(_U64)
        self._cell = artifact.cell if artifact.cell > 0 else 1.0
        self._rot_flat = np.ascontiguousarray(self._rot.transpose(1, 0, 2).reshape(-1, index_tables * self._band))
        # Structured steps: the raw coordinates kept per query (all, or a salted subset of _RAW_COLS) and the
        # fingerprint's per-coordinate hash multipliers (drawn after the index geometry, which stays as it was).
        nf = artifact.n_features
        cols = np.sort(irng.choice(nf, _RAW_COLS, replace=False)) if nf > _RAW_COLS else None
        fp_mult = irng.integers(1, 2**62, size=nf, dtype=np.uint64) * _U64(2) + _U64(1)
        # probe table keys: per band, odd multipliers of its blocks' 64-bit hashes (drawn after the above)
        pb_mult = irng.integers(1, 2**62, size=(_PROBE_BANDS, _FP_BLOCKS // _PROBE_BANDS), dtype=np.uint64)
        #: What the detector reads from each query before any state (a decoding process may compute it).
        self.featurizer = QueryFeaturizer(
            artifact.center, artifact.scale, artifact.projection, cols, fp_mult, pb_mult * _U64(2) + _U64(1), probe_bits
        )
        self._scratch = Scratch()  # large per-batch intermediates (not state)
        self._reset()

    # ------------------------------------------------------------------------------------- state

    def _reset(self) -> None:
        n, h, d = self.max_clients, self.history, self.artifact.projection.shape[1]
        self._index: dict[str, int] = {}
        self._ids = np.full(n, None, dtype=object)
        self._free = list(range(n - 1, -1, -1))
        self._next_uid = 1
        # per-client table
        self._uid = np.zeros(n, dtype=np.int64)  # 0 = empty slot
        self._ring = np.zeros((n, h, d), dtype=np.float16)
        self._ring_pred = np.zeros((n, h), dtype=np.int8)
        # low 32 bits of the sequence number (evidence only; the full number is rebuilt from the event's)
        self._ring_seq = np.zeros((n, h), dtype=np.uint32)
        self._count = np.zeros(n, dtype=np.int64)
        self._last_ts = np.zeros(n, dtype=np.int64)
        # decayed rate sum in units of 2**(_EPOCH * epoch of last_ts) (see _decayed_rates)
        self._rate_acc = np.zeros(n, dtype=np.float64)
        self._ev = np.zeros(n, dtype=np.float32)
        # structured steps: the last _RAW raw queries (float16 values, fingerprints), the count of structured steps
        # (saturating), the low 32 bits of the client's event count at the last one, and their own CUSUM
        fs = min(self.artifact.n_features, _RAW_COLS)
        self._raw = np.zeros((n, _RAW, fs), dtype=np.float16)
        self._raw_fp = np.zeros((n, _RAW, _FP_BLOCKS // 2), dtype=np.uint8)
        # how often each of those queries had been re-sent exactly, back to back (saturating)
        self._raw_rep = np.zeros((n, _RAW), dtype=np.uint8)
        self._n_struct = np.zeros(n, dtype=np.uint16)
        self._struct_at = np.zeros(n, dtype=np.uint32)
        self._ev_s = np.zeros(n, dtype=np.float32)
        # the client has sent an in-distribution query that was no near-duplicate (a point a search starts from)
        self._anchor = np.zeros(n, dtype=bool)
        self._n_flip = np.zeros(n, dtype=np.int32)
        self._n_knn = np.zeros(n, dtype=np.int32)
        self._n_line = np.zeros(n, dtype=np.int32)
        self._n_low = np.zeros(n, dtype=np.int32)  # near-duplicates with a small top-2 margin
        self._n_ext = np.zeros(n, dtype=np.int32)  # events in the extraction test
        self._n_ood = np.zeros(n, dtype=np.int32)
        self._n_close = np.zeros(n, dtype=np.int32)
        self._classes = np.zeros((n, 16), dtype=np.int32)
        self._level = np.zeros((n, 3), dtype=np.int8)
        self._incident = np.full((n, 3), -1, dtype=np.int64)
        self._calm = np.zeros((n, 3), dtype=np.int32)
        self._cool = np.zeros((n, 3), dtype=np.int32)
        self._campaign = np.full(n, -1, dtype=np.int32)
        self._camp_hits = np.zeros(n, dtype=np.int32)
        self._camp_link = np.full(n, -1, dtype=np.int32)  # campaign of the last cross-client near-duplicate partner
        self._probe = np.zeros(n, dtype=np.int32)  # probe hits the client took part in (either side)
        self._walks = np.zeros(n, dtype=np.uint8)  # its own queries that were walk steps near another's (saturating)
        # global index
        m = 1 << self.index_bits
        # one 32-byte row per entry (key, uid, seq, slot << 9 | walk << 8 | pred + 1): a lookup is one cache line
        self._ix = np.zeros((self.index_tables, m, 4), dtype=np.int64)
        self._ix[..., 2] = -(1 << 62)
        # probe table: _PROBE_BANDS parts of 2**probe_bits slots (band tag, log position); the log: a ring of the
        # last 2**probe_log_bits queries (fingerprint, uid, seq, ts, slot, origin), and the count of queries logged
        self._pt = np.zeros(_PROBE_BANDS << self.probe_bits, dtype=np.int64)
        self._plog = np.zeros((1 << self.probe_log_bits, _PROBE_COLS), dtype=np.int64)
        self._pn = 0
        # campaigns by id, the least recently active first
        self._camps: dict[int, _Campaign] = {}
        self._next_camp = 0
        # extraction split over accounts: the last ood_window events (uid, slot and ood query count of an ood-only
        # account's ood query, uid 0 otherwise), the events seen, and the campaign: [id (-1: none), accounts joined
        # at its last record, incident seq, event count at its last such query, next id, accounts joined, stream
        # time of its last record, largest count], its latest members
        self._oring = np.zeros((self.ood_window, 3), dtype=np.int64)
        self._on = 0
        self._oc = [-1, 0, -1, _NO_SEQ, 0, 0, 0, 0]
        self._clock = _NO_SEQ  # stream time: the largest event time seen (ms)
        self._oc_members: list[str] = []
        self._sketch = SpaceSaving(self.heavy_hitters)
        # population gate: decayed, client-weighted sums of log nearest distance (vs the reference) and of
        # ood flags, and their weight; starts at the reference with a prior weight
        dd = self.artifact.projection.shape[1]
        sp = self.artifact.spread if np.isfinite(self.artifact.spread) else 0.0
        self._pop = np.concatenate([[_POP_PRIOR], np.zeros(dd), [_POP_PRIOR * sp, _POP_PRIOR * self.artifact.p_ood]])

    def memory_bytes(self) -> int:
        """Bytes held by the detector's state (arrays, plus an estimate for the id map and strings)."""
        total = 0
        for v in vars(self).values():
            if isinstance(v, np.ndarray):
                total += v.nbytes
        per_id = 104 + 64  # dict entry + a short str object
        total += len(self._index) * per_id + len(self._free) * 8
        return total

    def bytes_per_client(self) -> float:
        """Fixed state bytes per client slot (arrays only)."""
        per = 0
        for v in vars(self).values():
            if isinstance(v, np.ndarray) and v.shape[:1] == (self.max_clients,):
                per += v.nbytes // self.max_clients
        return float(per)

    @property
    def n_clients(self) -> int:
        return len(self._index)

    def heavy_hitters_top(self, n: int = 10) -> list[tuple[str, int, int]]:
        """Heaviest clients so far (pseudonymized if configured): (client, count, over-estimate)."""
        return [(self._name(k), c, e) for k, c, e in self._sketch.top(n)]

    _CLIENT_ARRAYS = (
        "uid",
        "ring",
        "ring_pred",
        "ring_seq",
        "count",
        "last_ts",
        "rate_acc",
        "ev",
        "raw",
        "raw_fp",
        "raw_rep",
        "n_struct",
        "struct_at",
        "ev_s",
        "anchor",
        "n_flip",
        "n_knn",
        "n_line",
        "n_low",
        "n_ext",
        "n_ood",
        "n_close",
        "classes",
        "level",
        "incident",
        "calm",
        "cool",
        "campaign",
        "camp_hits",
        "camp_link",
        "probe",
        "walks",
    )

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """State as arrays (client table of occupied slots, index, campaigns, sketch)."""
        occ = np.flatnonzero(self._uid > 0)
        out: dict[str, npt.NDArray[Any]] = {
            "client.slot": occ.astype(np.int64),
            "client.id": np.asarray([str(s) for s in self._ids[occ]], dtype=str),
        }
        for name in self._CLIENT_ARRAYS:
            out["client." + name] = getattr(self, "_" + name)[occ].copy()
        for name in ("key", "uid", "seq", "pred", "slot", "walk"):
            out["index." + name] = self._ix_column(name)
        cids = list(self._camps)  # (in order of activity: the least recently active first)
        out["campaign.id"] = np.asarray(cids, dtype=np.int64)
        out["campaign.stats"] = np.asarray(
            [[getattr(self._camps[c], f) for f in _Campaign.STATS] for c in cids], dtype=np.int64
        ).reshape(-1, len(_Campaign.STATS))
        members = [self._camps[c].members for c in cids]
        out["campaign.n_members"] = np.asarray([len(m) for m in members], dtype=np.int64)
        out["campaign.members"] = np.asarray([s for m in members for s in m], dtype=str)
        out["campaign.z"] = np.asarray([self._camps[c].ring for c in cids], dtype=np.float32).reshape(
            len(cids), _CAMP_RING, self.artifact.projection.shape[1]
        )
        out["probe.table"] = self._pt.copy()
        out["probe.log"] = self._plog.copy()
        out["probe.count"] = np.asarray(self._pn, dtype=np.int64)
        out["meta.state"] = np.asarray(_STATE, dtype=np.int64)
        out["meta.counters"] = np.asarray(
            [self._next_uid, self._next_camp, self._sketch.total, self._clock], dtype=np.int64
        )
        out["ood.ring"] = self._oring.copy()
        out["ood.state"] = np.asarray([self._on, *self._oc], dtype=np.int64)
        out["ood.members"] = np.asarray(self._oc_members, dtype=str)
        out["meta.population"] = self._pop.copy()
        out["sketch.keys"] = self._sketch.keys.copy()
        out["sketch.counts"] = self._sketch.counts.copy()
        out["sketch.errors"] = self._sketch.errors.copy()
        return out

    def restore(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        """Continue from a :meth:`snapshot` of an identically configured detector."""
        layout = int(state["meta.state"]) if "meta.state" in state else 1
        if layout != _STATE:
            # e.g. written before structured steps were tracked: those clients' searches would restart half-seen
            raise SnapshotError(f"adversarial snapshot layout {layout} is not supported (expected {_STATE})")
        try:
            slots = np.asarray(state["client.slot"], dtype=np.int64)
            if len(slots) and (slots.max() >= self.max_clients or slots.min() < 0):
                raise SnapshotError("snapshot has client slots beyond max_clients")
            ring = state["client.ring"]
            if ring.shape[1:] != self._ring.shape[1:]:
                raise SnapshotError(f"snapshot ring {ring.shape[1:]} does not match {self._ring.shape[1:]}")
            self._reset()
            for name in self._CLIENT_ARRAYS:
                getattr(self, "_" + name)[slots] = state["client." + name]
            ids = [str(s) for s in state["client.id"]]
            self._ids[slots] = np.asarray(ids, dtype=object)
            self._index = dict(zip(ids, slots.tolist(), strict=True))
            used = set(slots.tolist())
            self._free = [s for s in range(self.max_clients - 1, -1, -1) if s not in used]
            ix = {name: np.asarray(state["index." + name]) for name in ("key", "uid", "seq", "pred", "slot", "walk")}
            if ix["key"].shape != self._ix.shape[:2]:
                raise SnapshotError(f"snapshot index {ix['key'].shape} does not match {self._ix.shape[:2]}")
            self._ix[..., 0] = ix["key"].astype(np.uint64).view(np.int64)
            self._ix[..., 1] = ix["uid"]
            self._ix[..., 2] = ix["seq"]
            self._ix[..., 3] = (
                (ix["slot"].astype(np.int64) << 9)
                | (ix["walk"].astype(np.int64) << 8)
                | (ix["pred"].astype(np.int64) + 1)
            )
            pt, plog = np.asarray(state["probe.table"], dtype=np.int64), np.asarray(state["probe.log"], dtype=np.int64)
            if pt.shape != self._pt.shape or plog.shape != self._plog.shape:
                raise SnapshotError(f"snapshot probe table {pt.shape}, log {plog.shape} do not match this detector")
            self._pt[...] = pt
            self._plog[...] = plog
            self._pn = int(state["probe.count"])
            st = np.asarray(state["campaign.stats"], dtype=np.int64).reshape(-1, len(_Campaign.STATS))
            nm = np.asarray(state["campaign.n_members"], dtype=np.int64)
            mem = [str(s) for s in state["campaign.members"]]
            pos = 0
            for i, cid in enumerate(np.asarray(state["campaign.id"], dtype=np.int64).tolist()):
                self._camps[cid] = _Campaign(
                    **dict(zip(_Campaign.STATS, st[i].tolist(), strict=True)),
                    members=mem[pos : pos + int(nm[i])],
                    ring=np.asarray(state["campaign.z"][i], dtype=np.float32),
                )
                pos += int(nm[i])
            c = np.asarray(state["meta.counters"], dtype=np.int64)
            self._next_uid, self._next_camp, self._sketch.total, self._clock = (int(v) for v in c[:4])
            oring = np.asarray(state["ood.ring"], dtype=np.int64)
            if oring.shape != self._oring.shape:
                raise SnapshotError(f"snapshot ood window {oring.shape} does not match {self._oring.shape}")
            self._oring[...] = oring
            ost = np.asarray(state["ood.state"], dtype=np.int64).tolist()
            self._on, self._oc = int(ost[0]), [int(v) for v in ost[1:]]
            if len(self._oc) != 8:
                raise SnapshotError(f"snapshot ood state has {len(self._oc)} values, expected 8")
            self._oc_members = [str(m) for m in state["ood.members"]]
            self._pop = np.asarray(state["meta.population"], dtype=np.float64).copy()
            self._sketch.keys = np.asarray(state["sketch.keys"]).astype(str)
            self._sketch.counts = np.asarray(state["sketch.counts"], dtype=np.int64)
            self._sketch.errors = np.asarray(state["sketch.errors"], dtype=np.int64)
        except KeyError as e:
            raise SnapshotError(f"adversarial snapshot lacks {e}") from e
        except ValueError as e:
            raise SnapshotError(f"adversarial snapshot does not fit: {e}") from e

    # ------------------------------------------------------------------------------------- clients

    def _ix_column(self, name: str) -> npt.NDArray[Any]:
        """One field of the global index, in its own dtype (the snapshot's layout)."""
        col = self._ix[..., {"key": 0, "uid": 1, "seq": 2}.get(name, 3)]  # pred, slot and walk are packed
        if name == "key":
            return col.view(np.uint64).copy()
        if name == "pred":
            return ((col & 0xFF) - 1).astype(np.int8)
        if name == "slot":
            return (col >> 9).astype(np.int32)
        if name == "walk":
            return (col & 0x100) > 0
        return col.copy()

    def _name(self, client: str) -> str:
        if self.pseudonymize_key is None:
            return client
        return "p-" + hmac.new(self.pseudonymize_key, client.encode("utf-8"), hashlib.sha256).hexdigest()[:16]

    def _names(self, clients: Iterable[str]) -> list[str]:
        """:meth:`_name` of each client (a campaign record lists hundreds, each record anew)."""
        return list(clients) if self.pseudonymize_key is None else [self._name(c) for c in clients]

    def _slots(self, ids: npt.NDArray[np.object_], ts: I64) -> I64:
        """Slot of every event's client, allocating (and evicting) as needed."""
        get = self._index.get
        ids_l = ids.tolist()
        slots = np.fromiter(map(get, ids_l, itertools.repeat(-1)), dtype=np.int64, count=len(ids_l))
        new = np.flatnonzero(slots < 0)
        if len(new):
            new_ids = list(map(ids_l.__getitem__, new.tolist()))
            if not set(map(type, new_ids)) <= {str}:
                # ids are str by contract; anything else is looked up by its str (only misses pay for the check)
                for i in new.tolist():
                    if not isinstance(ids_l[i], str):
                        ids_l[i] = str(ids_l[i])
                        slots[i] = get(ids_l[i], -1)
                new = np.flatnonzero(slots < 0)
                new_ids = [ids_l[i] for i in new.tolist()]
            uniq = list(dict.fromkeys(new_ids))  # new clients in order of first appearance
            n_new = len(uniq)
            if n_new <= len(self._free):
                # room for all: the loop below without eviction, with dict and array operations
                taken = self._free[len(self._free) - n_new :][::-1]  # the slots ``pop()`` would give, in order
                del self._free[len(self._free) - n_new :]
                fresh = dict(zip(uniq, taken, strict=True))
                self._index.update(fresh)
                taken_a = np.asarray(taken, dtype=np.int64)
                names = np.empty(n_new, dtype=object)
                names[:] = uniq
                self._ids[taken_a] = names
                self._uid[taken_a] = self._next_uid + np.arange(n_new, dtype=np.int64)
                self._next_uid += n_new
                slots[new] = np.fromiter(map(fresh.__getitem__, new_ids), dtype=np.int64, count=len(new_ids))
                _, first_row = np.unique(slots[new], return_index=True)
                self._last_ts[slots[new[first_row]]] = ts[new[first_row]]
                return slots
            first: dict[str, int] = {}
            for i in new.tolist():
                c = ids_l[i]
                s = first.get(c)
                if s is None:
                    if not self._free:
                        taken = np.r_[slots[slots >= 0], np.fromiter(first.values(), dtype=np.int64)]
                        self._evict(taken, needed=n_new - len(first))
                    s = self._free.pop()
                    first[c] = s
                    self._index[c] = s
                    self._ids[s] = c
                    self._uid[s] = self._next_uid
                    self._next_uid += 1
                    self._last_ts[s] = ts[i]
                slots[i] = s
        return slots

    def _evict(self, exclude: I64, needed: int) -> None:
        occ = self._uid > 0
        prio = self._last_ts.astype(np.float64) + (self._level.max(axis=1) > 0) * self.protect_s * 1000.0
        prio[~occ] = np.inf
        prio[exclude] = np.inf
        m = min(max(self.evict_chunk, needed), int(np.isfinite(prio).sum()))
        if m <= 0:
            raise ValueError("max_clients is smaller than the number of clients in one batch")
        victims = np.argpartition(prio, m - 1)[:m]
        for s in victims.tolist():
            del self._index[self._ids[s]]
            self._ids[s] = None
            self._free.append(s)
        self._clear(victims)

    def _clear(self, s: I64) -> None:
        for name in self._CLIENT_ARRAYS:
            arr = getattr(self, "_" + name)
            arr[s] = -1 if name in ("incident", "campaign", "camp_link") else 0

    # ------------------------------------------------------------------------------------- update

    def update(
        self,
        batch: EventBatch,
        *,
        seq: int,
        ood: npt.ArrayLike | None = None,
        far_ood: npt.ArrayLike | None = None,
        features: QueryFeatures | None = None,
    ) -> list[AlertDecision]:
        """Feed one batch; ``seq`` is the stream sequence number of its first event.

        ``ood`` optionally flags out-of-distribution events (bool, or scores compared with
        ``ood_threshold``). ``far_ood`` optionally flags events so far out of distribution that one of them is an
        account's evidence (the anomaly detector's p-value at most its ``fpr**2``): in an extraction split over
        accounts, an account whose only query so far is such an event is named (see :meth:`_ood_campaign`). Events
        without a client id are skipped. ``features``: :attr:`featurizer`
        applied to the batch elsewhere (a decoding process); computed here when None.
        """
        n = len(batch)
        if n == 0:
            return []
        if batch.numeric.shape[1] != self.artifact.n_features:
            raise SchemaMismatchError(
                f"batch has {batch.numeric.shape[1]} numeric features, artifact {self.artifact.n_features}"
            )
        if ood is None:
            is_ood = np.zeros(n, dtype=bool)
            have_ood = False
        else:
            o = np.asarray(ood)
            if o.shape != (n,):
                raise SchemaMismatchError(f"ood has shape {o.shape}, batch has {n} events")
            is_ood = o.astype(bool) if o.dtype == bool else np.nan_to_num(o.astype(np.float64)) >= self.ood_threshold
            have_ood = True
        far = np.zeros(n, dtype=bool) if far_ood is None else np.asarray(far_ood, dtype=bool)
        if far.shape != (n,):
            raise SchemaMismatchError(f"far_ood has shape {far.shape}, batch has {n} events")
        keep: npt.NDArray[np.bool_] = batch.client_id != None  # noqa: E711 (elementwise on the object array)
        if self.ignore_clients:
            keep &= ~np.fromiter(map(self.ignore_clients.__contains__, batch.client_id), bool, n)
        every = bool(keep.all())
        rows = np.arange(n) if every else np.flatnonzero(keep)
        if len(rows) == 0:
            return []

        def pick(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
            return a if every else a[rows]  # no copy when every event has a client (the common case)

        ids = pick(batch.client_id)
        ts = pick(batch.ts)
        is_ood = pick(is_ood)
        far = pick(far) & is_ood
        if features is None:
            q = self.featurizer(batch if every else batch.take(rows))
        elif len(features) != n:
            raise SchemaMismatchError(f"query features of {len(features)} events for a batch of {n}")
        else:
            q = features if every else features.take(rows)
        z, raw16, fp, probe_pos, margin = q.z, q.raw16, q.fp, q.probe_pos, q.margin
        pred = pick(batch.prediction_code).astype(np.int64)
        proba = pick(batch.proba)
        if proba.shape[1] >= 2:
            miss = pred == MISSING
            if miss.any():
                pred[miss] = np.argmax(np.nan_to_num(proba[miss], nan=-1.0), axis=1)
        pred = np.clip(pred, -1, 15)
        slots = self._slots(ids, ts)
        # the summary before the batch: a flood alert lists the heavy hitters as of its own row
        sketch0 = SpaceSaving(self.heavy_hitters)
        sketch0.keys, sketch0.counts, sketch0.errors = self._sketch.keys, self._sketch.counts, self._sketch.errors
        sketch0.total = self._sketch.total
        self._count_heavy(self._sketch, slots)
        probes, novel = self._probe_pass(probe_pos, fp, slots, seq + rows, ts)
        walk = novel & is_ood
        hits6 = self._index_pass(z, slots, pred, seq + rows, walk)
        out: list[AlertDecision] = []
        event_ids = pick(batch.event_id)
        n_seen, pscale, layout, ood_only = self._process(
            slots, z, raw16, fp, pred, margin, is_ood, have_ood, ts, seq + rows, event_ids, out, sketch0, seq
        )
        # a first ood query far out counts as two: enough for the account to be named
        evidence = np.where(far & (ood_only == 1), 2, ood_only)
        clock = np.maximum.accumulate(np.r_[self._clock, ts])[1:]  # stream time at each event
        self._clock = int(clock[-1])
        out.extend(self._ood_campaign(evidence, slots, seq + rows, ts, clock, event_ids, seq))
        # The index's cells have a fixed width: once the whole population's distances have shrunk by half
        # (a recalibrated sensor), cross-client coincidences are no longer evidence of a shared search.
        ok = pscale[hits6[0]] >= _POP_INDEX
        hi, h_slot, h_uid, h_pred, h_seq = (h[ok] for h in hits6[:5])
        h_walk = hits6[5][ok]
        # A walk step near another client's walk step links the two like a probe hit: a search split over
        # accounts whose steps change every coordinate a little (Boundary, HSJ) and leave the distribution.
        # (Benign clients rarely send new ood inputs, and a popular one's copies are no walk steps.)
        wk = h_walk & walk[hi] & ~np.isin(hi, probes[0])
        if wk.any():
            # a step: within the reference's near-duplicate distance of one of the matched client's queries (the
            # index's cells are wider; noisy copies of one popular input are rarely that close, a search's steps are)
            wk[wk] = (
                self._history_dist(
                    z, hi[wk], np.where(self._uid[h_slot[wk]] == h_uid[wk], h_slot[wk], -1), slots, layout
                )
                <= self.artifact.tau_near
            )
        if wk.any():
            add = (hi[wk], h_slot[wk], h_uid[wk], h_seq[wk], np.full(int(wk.sum()), -1, dtype=np.int64))
            o = np.argsort(np.concatenate([probes[0], add[0]]), kind="stable")
            p_i, p_slot, p_uid, p_seq, p_ch = (np.concatenate([a, b])[o] for a, b in zip(probes, add, strict=True))
            probes = (p_i, p_slot, p_uid, p_seq, p_ch)
        hits = (hi, h_slot, h_uid, h_pred)
        out.extend(self._campaigns(hits, probes, slots, z, pred, n_seen, seq + rows, ts, clock, event_ids, layout, seq))
        # Decided on stream positions; like every detector, the records report the row within this batch
        # (``event_index``, the stream position minus ``seq``; ``pane`` keeps the stream position).
        out.sort(key=lambda a: (a.event_index, KINDS.index(a.kind), a.client_id or ""))
        return out

    def _probe_pass(
        self, pos: I64, fp: npt.NDArray[np.uint8], slots: I64, seqs: I64, ts: I64
    ) -> tuple[tuple[I64, I64, I64, I64, I64], npt.NDArray[np.bool_]]:
        """Look every event up in the probe table and insert it, with exact sequential semantics (as
        :meth:`_index_pass`: an event sees, per band, the previous batch event at its slot, else the table).

        A table slot holds the band's fingerprint bits (a tag) and the position of the query in the probe log (a
        ring of the last ``2**probe_log_bits`` queries): a lookup reads 8 bytes per band, and only a slot whose tag
        is the event's (a query sharing the band) and whose query is still in the log is followed to the log.
        A *probe hit*: a logged query of another client, sent at most ``probe_window_s`` before, whose fingerprint
        differs in 1 to ``probe_blocks`` blocks: the same input with a few coordinates changed (a coordinate-wise
        search's step; exact repeats do not count). Of the event's band matches, the most recent one. A query
        changing at most ``probe_blocks`` of 32 blocks keeps at least ``8 - probe_blocks`` bands whole.

        An exact copy of another client's logged query that is a probe hit, or copies one, is a probe hit too while
        the first hit is at most ``probe_window_s`` old (changed blocks 0): a search re-queries its current best
        (Square, twice per step), and split over accounts each re-query comes from another one. Copies of queries
        that are no probe hit (a popular input resent by many clients) stay none. Copies of copies in one batch are
        resolved by pointer doubling over the chains, so the batching does not matter.

        Returns (event rows, matched client slots, their uids, their seqs, changed blocks) of the probe hits, and
        which events are new (no copy of a logged query of any client).
        """
        n = len(slots)
        nb = self._bands
        cap = len(self._plog)
        base = self._pn  # log position of the batch's first event
        vals = self._scratch.get("px.vals", (n, _PROBE_COLS), np.int64)  # the events' log entries
        vals[:, 0:2] = np.ascontiguousarray(fp).view(np.int64)
        vals[:, 2] = self._uid[slots]
        vals[:, 3] = seqs
        vals[:, 4] = ts
        vals[:, 5] = slots
        vals[:, 6] = _NO_SEQ
        # slot values of the events, (band, event) flattened: the band's 2 fingerprint bytes (4 blocks) as a tag
        tag = np.ascontiguousarray(fp).view(np.uint16).T[:nb].astype(np.int64)  # (nb, n)
        mine = (tag << 48) | (base + 1 + np.arange(n, dtype=np.int64))[None, :]
        minef = mine.ravel()
        posf = pos[:nb].ravel()
        o, ps = _stable_order(posf)
        same = np.r_[False, ps[1:] == ps[:-1]]
        prev_of = np.empty(nb * n, dtype=np.int64)
        prev_of[o] = np.where(same, np.r_[-1, o[:-1]], -1)
        stored = np.take(self._pt, posf)
        in_batch = np.flatnonzero(prev_of >= 0)
        stored[in_batch] = np.take(minef, prev_of[in_batch])
        # candidates: a stored query with the event's band (not one that shares the slot by a hash collision), still
        # in the log as the event sees it (the last ``cap`` queries before it)
        ref = (stored & _REF) - 1
        live = (ref >= 0).reshape(nb, n) & (ref.reshape(nb, n) >= (base - cap + np.arange(n, dtype=np.int64))[None, :])
        cand = np.flatnonzero(((stored >> 48) == minef >> 48) & live.ravel())
        ref = ref[cand]
        ev = cand % n
        new = ref >= base
        ent = np.take(self._plog, ref % cap, axis=0)  # (read before this batch's events are logged)
        ent[new] = np.take(vals, ref[new] - base, axis=0)
        own = np.take(vals, ev, axis=0)
        x = (ent[:, 0:2] ^ own[:, 0:2]).view(np.uint64)
        x |= x >> _U64(1)
        x |= x >> _U64(2)
        x &= _U64(0x1111111111111111)  # one bit per 4-bit block: set where the block differs
        changed = np.bitwise_count(x).sum(axis=1, dtype=np.int64)
        win = int(self.probe_window_s * 1000)
        other = (ent[:, 2] > 0) & (ent[:, 2] != own[:, 2]) & (own[:, 4] - ent[:, 4] <= win)
        near = other & (changed >= 1) & (changed <= self._probe_limit)
        hit, k = self._latest(cand, near, ent[:, 3], n)
        # exact copies of another client's query: the most recent one, for the events that are no near hit
        copy, kc = self._latest(cand, other & (changed == 0), ent[:, 3], n)
        is_hit = np.zeros(n, dtype=bool)
        is_hit[hit] = True
        keep_c = ~is_hit[copy]
        copy, kc = copy[keep_c], kc[keep_c]
        # the time of the probe hit each event is or copies (NO_SEQ: none). An input keeps the origin of its first
        # appearance still logged: a search that steps back onto the input it started from (a near hit of its own
        # step) does not make that input a hit, so a benign client sending the same natural input is no copy of one.
        # A copy of a batch event takes that one's.
        again, ka = self._latest(cand, (ent[:, 2] > 0) & (changed == 0), ent[:, 3], n)  # any client's, any age
        origin = np.full(n, _NO_SEQ, dtype=np.int64)
        origin[hit] = ts[hit]
        src = np.full(n, -1, dtype=np.int64)
        ref_a = ref[ka]
        inb = ref_a >= base
        src[again[inb]] = ref_a[inb] - base
        origin[again[~inb]] = ent[ka[~inb], 6]  # (logged before this batch: its stored origin)
        if inb.any():  # each chain of in-batch copies takes its first event's origin
            origin = _chain_sums(src, np.where(src >= 0, 0, origin))
        vals[:, 6] = origin
        live_c = (origin[copy] > _NO_SEQ) & (ts[copy] - origin[copy] <= win)
        copy, kc = copy[live_c], kc[live_c]
        novel = np.ones(n, dtype=bool)
        novel[again] = False
        hit = np.concatenate([hit, copy])
        k = np.concatenate([k, kc])
        o_h = np.argsort(hit, kind="stable")
        hit, k = hit[o_h], k[o_h]
        found = ent[k]
        # last writer per slot wins; the log takes the batch's last ``cap`` events
        w = o[np.r_[ps[1:] != ps[:-1], True]]
        self._pt[posf[w]] = minef[w]
        tail = np.arange(max(0, n - cap), n)
        _put_rows(self._plog, (base + tail) % cap, vals[tail])
        self._pn = base + n
        return (hit, found[:, 5], found[:, 2], found[:, 3], changed[k]), novel

    @staticmethod
    def _latest(cand: I64, ok: npt.NDArray[np.bool_], when: I64, n: int) -> tuple[I64, I64]:
        """Of the probe candidates ``cand`` (band-major flat indices ``band * n + event``, sorted) passing ``ok``,
        the most recent (largest ``when``; the first band holding it) of each event: (event rows, candidate index).
        Sorts the candidates only (few: a band matches only a query with the same values on its coordinates)."""
        j = np.flatnonzero(ok)
        ev = cand[j] % n
        o = np.lexsort((cand[j] // n, -when[j], ev))  # by event, then most recent, then band
        ev, j = ev[o], j[o]
        first = np.r_[True, ev[1:] != ev[:-1]] if len(ev) else np.zeros(0, dtype=bool)
        return ev[first], j[first]

    def _index_pass(
        self, z: npt.NDArray[np.float32], slots: I64, pred: I64, seqs: I64, walk: npt.NDArray[np.bool_]
    ) -> tuple[I64, I64, I64, I64, I64, npt.NDArray[np.bool_]]:
        """Look every event up in the global index and insert it, with exact sequential semantics.

        Returns (event rows, matched client slots, their uids, matched predicted classes, matched seqs, whether
        the matched query is a walk step too) of cross-client matches. ``walk`` marks the events' walk steps: new
        (no copy of a logged query) and out of distribution.
        """
        n = len(z)
        t_, m, band = self.index_tables, 1 << self.index_bits, self._band
        uid = self._uid[slots]
        packed = (slots << 9) | (walk.astype(np.int64) << 8) | (pred + 1)
        # all tables at once: keys (T, n), flattened table-major; positions of different tables never meet
        sc = self._scratch
        zf = sc.get("ix.z", z.shape, np.float64)
        np.copyto(zf, z)
        cells = sc.get("ix.cells", (n, t_ * band), np.float64)
        np.matmul(zf, self._rot_flat, out=cells)  # the whole batch at once: BLAS rounding depends on the shape
        cells = cells.reshape(n, t_, band)
        # in place: floor(proj / cell + off), as int64 reinterpreted as uint64 (two's complement)
        np.divide(cells, self._cell, out=cells)
        cells += self._off[None]
        np.floor(cells, out=cells)
        q = sc.get("ix.q", (n, t_, band), np.int64)
        np.copyto(q, cells, casting="unsafe")
        q = q.view(_U64)
        with np.errstate(over="ignore"):
            # uint64 sums wrap modulo 2**64, so the summation order (einsum's) cannot change the key
            key = np.einsum("ntb,tb->tn", q, self._mult)
            key ^= key >> _U64(29)
            key *= _U64(0xBF58476D1CE4E5B9)
            key ^= key >> _U64(32)
        key |= _U64(1)  # 0 marks an empty slot
        pos = ((key & _U64(m - 1)).astype(np.int64) + (np.arange(t_, dtype=np.int64) * m)[:, None]).ravel()
        keyf = key.view(np.int64).ravel()
        vals = sc.get("ix.vals", (t_, n, 4), np.int64)
        vals[:, :, 0] = key.view(np.int64)
        vals[:, :, 1] = uid
        vals[:, :, 2] = seqs
        vals[:, :, 3] = packed
        vals = vals.reshape(t_ * n, 4)
        # stored entry each event sees: the previous batch event in the same slot, else the table
        o, ps = _stable_order(pos)
        same = np.r_[False, ps[1:] == ps[:-1]]
        prev_of = np.empty(t_ * n, dtype=np.int64)
        prev_of[o] = np.where(same, np.r_[-1, o[:-1]], -1)
        # Rows of 4 int64 are moved as one 32-byte item: np.take / np.put on a void view are ~10x faster than
        # fancy indexing of the 2-D table (which walks a subspace per row).
        row = np.dtype((np.void, 32))
        table = self._ix.reshape(t_ * m, 4).view(row).reshape(-1)
        stored = sc.get("ix.stored", (t_ * n, 4), np.int64)
        np.take(table, pos, out=stored.view(row).reshape(-1))
        in_batch = np.flatnonzero(prev_of >= 0)
        stored[in_batch] = np.take(vals, prev_of[in_batch], axis=0)
        ok = ((stored[:, 0] == keyf) & (vals[:, 2] - stored[:, 2] <= self.index_horizon)).reshape(t_, n)
        match_cnt = ok.sum(axis=0)
        cross = ok & (stored[:, 1] != vals[:, 1]).reshape(t_, n)
        first = np.argmax(cross, axis=0)  # the first table with a cross-client match
        any_cross = cross.any(axis=0)
        at = first * n + np.arange(n)
        best_uid = np.where(any_cross, stored[at, 1], 0)
        best_packed = np.where(any_cross, stored[at, 3], 0)
        # last writer per slot wins
        w = o[np.r_[ps[1:] != ps[:-1], True]]
        np.put(table, pos[w], np.take(vals, w, axis=0).view(row).reshape(-1))
        best_pred = (best_packed & 0xFF) - 1
        best_slot = best_packed >> 9
        best_walk = (best_packed & 0x100) > 0
        best_seq = stored[at, 2]
        hit = np.flatnonzero((match_cnt >= self.index_match) & (best_uid > 0))
        return hit, best_slot[hit], best_uid[hit], best_pred[hit], best_seq[hit], best_walk[hit]

    def _count_heavy(self, sketch: SpaceSaving, slots: I64) -> None:
        """Count a batch's events in ``sketch`` on client slots (integers), looking names up only for the
        keys that can enter it."""
        us, uc = np.unique(slots, return_counts=True)
        known = np.zeros(len(us), dtype=bool)
        ks = [self._index.get(k, -1) for k in sketch.keys.tolist()]
        known[np.isin(us, np.asarray(ks, dtype=np.int64))] = True
        cand = sketch.candidates(uc, known)
        sketch.add_counts(np.asarray([str(v) for v in self._ids[us[cand]]], dtype=str), uc[cand], len(slots))

    def _heavy_at(self, sketch0: SpaceSaving, slots: I64) -> list[tuple[str, int, int]]:
        """Top 5 heavy hitters after the batch's events up to a row (``slots`` is that prefix), from the summary
        before the batch: an alert does not name clients by events that come after it."""
        sk = SpaceSaving(sketch0.capacity)
        sk.keys, sk.counts, sk.errors, sk.total = sketch0.keys, sketch0.counts, sketch0.errors, sketch0.total
        self._count_heavy(sk, slots)
        return [(self._name(k), c, e) for k, c, e in sk.top(5)]

    def _process(
        self,
        s: I64,
        z: npt.NDArray[np.float32],
        raw16: npt.NDArray[np.float16],
        fp: npt.NDArray[np.uint8],
        pred: I64,
        margin: F64,
        is_ood: npt.NDArray[np.bool_],
        have_ood: bool,
        ts: I64,
        seqs: I64,
        event_ids: npt.NDArray[np.object_],
        out: list[AlertDecision],
        sketch0: SpaceSaving,
        base: int,
    ) -> tuple[I64, F64, _Layout, I64]:
        """All events of the batch at once: each client's events are laid out after its ring contents
        (chronologically), so every event sees exactly the ``history`` queries before it; the per-client
        scalar states (CUSUM, counters, decayed rate) are segmented scans.

        Records go to ``out`` with their row in the batch (stream position minus ``base``). Returns every event's
        count of its client's events so far, the population distance scale, the layout (so the campaign pass
        can see a client's ring as it was at any row of the batch), and whether each event is an ood query of a
        client all of whose queries so far are (for :meth:`_ood_campaign`)."""
        art = self.artifact
        h, k = self.history, art.k
        n, dd = z.shape
        # --- sort events by client (stable: stream order within a client)
        order, so = _stable_order(s)
        gstarts = np.flatnonzero(np.r_[True, so[1:] != so[:-1]])
        n_g = len(gstarts)
        m_g = np.diff(np.r_[gstarts, n])
        gslot = so[gstarts]
        gid = np.repeat(np.arange(n_g), m_g)  # group of each sorted event
        j_in = np.arange(n) - np.repeat(gstarts, m_g)
        cnt_g = self._count[gslot]
        f_g = np.minimum(cnt_g, h)
        len_g = f_g + m_g
        e_start = np.r_[0, np.cumsum(len_g)[:-1]]
        total = int(len_g.sum())
        # float32 working copy holding float16-rounded values, as the ring stores them (so a batch sees
        # exactly what the same rows one at a time would); ``h`` padding rows in front let every event's
        # history be one contiguous window
        e_zp = self._scratch.get("proc.e_zp", (total + h, dd), np.float32)  # every row below the padding is set
        e_zp[:h] = 0.0
        e_z = e_zp[h:]
        e_pred = np.empty(total, dtype=np.int8)
        e_seq = np.empty(total, dtype=np.int64)
        tf = int(f_g.sum())
        if tf:
            grp = np.repeat(np.arange(n_g), f_g)
            i = np.arange(tf) - np.repeat(np.cumsum(f_g) - f_g, f_g)
            rpos = (cnt_g[grp] - f_g[grp] + i) % h
            dst = e_start[grp] + i
            flat = gslot[grp] * h + rpos  # ring entry, the ring seen as (clients * h) rows
            _put_rows(e_z, dst, _widen16(_take_rows(self._ring.reshape(-1, dd), flat)))
            e_pred[dst] = self._ring_pred.ravel()[flat]
            e_seq[dst] = self._ring_seq.ravel()[flat]
        p = e_start[gid] + f_g[gid] + j_in  # position in E of each sorted event
        zs = _take_rows(z, order)
        predo = pred[order]
        z16 = zs.astype(np.float16)  # the values the ring keeps
        _put_rows(e_z, p, _widen16(z16))
        e_pred[p] = predo
        e_seq[p] = seqs[order] & 0xFFFFFFFF
        start = e_start[gid]
        n_hist = p - start  # earlier rows of the event's client: lag j (0 = newest) is valid below this
        # Distances to the window of earlier rows (newest first); lags beyond every event's history are not computed.
        dist = self._scratch.get("proc.dist", (n, h), np.float32)
        wl = min(h, int(n_hist.max(initial=0)))
        dist[:, wl:] = np.inf
        own = self._scratch.get("proc.own", e_z.shape, np.float32)
        own[...] = e_z  # the events' own (float32, unrounded) values at their rows, compared with the stored ones
        _put_rows(own, p, zs)
        dist[:, :wl] = 0.0  # entries beyond an event's history are not all computed: keep them finite until masked
        _lag_dist(e_zp, own, p, n_hist, dist[:, :wl], self._scratch)
        win = dist[:, :wl]  # the lags beyond are inf
        np.copyto(win, np.inf, where=np.arange(wl)[None, :] >= n_hist[:, None])
        j1 = np.argmin(win, axis=1) if wl else np.zeros(n, dtype=np.intp)  # (the first minimum either way)
        rr = np.arange(n)
        d1 = dist[rr, j1]
        nb = np.where(j1 < n_hist, p - 1 - j1, 0)
        # mean distance to the k nearest: inf for an event with fewer than k earlier rows (its k nearest include an
        # inf), unless a NaN (float16 overflows) sorts after the infs; the other rows as a whole-row partition
        rk = np.flatnonzero(n_hist >= k) if not np.isnan(win).any() else rr
        knn = np.full(n, np.inf, dtype=np.float32)
        knn[rk] = np.partition(dist[rk], k - 1, axis=1)[:, :k].mean(axis=1)

        def seg(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
            """Per-client running sum (exact for the integers and halves it is used on, whatever the batch holds)."""
            c: npt.NDArray[Any] = np.cumsum(x, axis=0)
            out_: npt.NDArray[Any] = c - np.repeat(c[gstarts] - x[gstarts], m_g, axis=0)
            return out_

        # --- population gate (stream order): a shift of every client's inputs is drift, not an attack.
        # Distance thresholds follow the population's current nearest distances (only ever shrinking) and
        # the ood evidence is measured against the population's current ood rate.
        scale_s, pood_s = self._population(z, is_ood)
        sc_rows = scale_s
        sc = scale_s[order]
        pood = pood_s[order]
        t_near, t_knn, t_close = art.tau_near * sc, art.tau_knn * sc, art.tau_close * sc
        near = d1 < t_near
        flip = near & (e_pred[nb].astype(np.int64) != predo) & self._flips
        tight = knn < t_knn
        mo = margin[order]
        low = near & (np.nan_to_num(mo, nan=1.0) < art.margin_low) & ~flip
        has2 = p - 2 >= start
        prev = _take_rows(e_zp, p - 1 + h)
        prev2 = _take_rows(e_zp, p - 2 + h)
        step = zs - prev
        prev_step = prev - prev2
        sn = np.linalg.norm(step, axis=1)
        pn = np.linalg.norm(prev_step, axis=1)
        big = has2 & (sn > 0.05 * art.tau_near) & (pn > 0.05 * art.tau_near)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.abs((step * prev_step).sum(1)) / (sn * pn)
        line = big & (cos > art.cos_line)
        # A near-duplicate of an out-of-distribution query: searches that start from noise (Boundary,
        # HopSkipJump) or from a large perturbation (Square) keep re-querying such points, while benign
        # traffic sends them at the reference rate ``p_ood``; a retried odd input adds at most a few halves.
        # ... but only once the client has sent an in-distribution query that was no near-duplicate: the point a
        # search starts from (Boundary, HopSkipJump and Square start from the input they perturb). A client
        # resending one odd input with a little noise, and nothing else, is no search.
        idd_ev = ~is_ood[order] & ~near
        anchor = self._anchor[gslot][gid] | (seg(idd_ev.astype(np.int64)) > idd_ev)
        odd = near & is_ood[order] & ~flip & ~low & (pood < _POP_OOD) & anchor
        # A tight neighbourhood is also what a benign client resending one in-distribution input (with a little
        # noise) produces, ~10 resends in: for in-distribution events it counts only once the client's
        # near-duplicates have shown a search signature (a class flip, a small top-2 margin, or a line step), this
        # event's included. Near an ood query it still counts unconditionally: the first queries of a Boundary
        # search started from noise are the same tight ood cluster with no flip, margin or line yet (gating it
        # moved the benchmark's Boundary detection from ~9 to ~150 queries), so a resent ood input still fires.
        sig = (self._n_flip[gslot] + self._n_line[gslot] + self._n_low[gslot] > 0)[gid] | (
            seg((flip | low | line).astype(np.int64)) > 0
        )
        ood_now = is_ood[order] & (pood < _POP_OOD) & anchor
        inc = 1.0 * flip + (tight & (sig | ood_now)) + line + 0.5 * low + 0.5 * odd
        # Structured steps (coordinate-wise searches: ZOO, SimBA, Square), in raw feature space: a query that
        # changes a few coordinates of one of the client's previous _RAW queries, or most of its changed
        # coordinates by one |delta|; and an exact repeat shortly (2 * _RAW queries) after such a step (Square
        # re-queries its current best). Their own CUSUM, ``ev_s``: +1 per such query, -1 per other near-duplicate
        # (a noisy retry), -0.25 per other query. Benign clients rarely change a handful of coordinates exactly.
        cnt = cnt_g[gid] + j_in  # events before this one
        struct, dup, base_r, base_rep = self._structured(raw16, fp, order, gslot, gid, m_g, cnt_g, j_in)
        n_struct0 = self._n_struct[gslot].astype(np.int64)
        # the client's event count at its last structured step (its low 32 bits are kept; none: far in the past)
        age0 = (cnt_g - self._struct_at[gslot].astype(np.int64)) & 0xFFFFFFFF
        last0 = np.where(n_struct0 > 0, cnt_g - age0, -(1 << 40))
        last_pos = np.maximum.accumulate(np.where(struct, rr, -1))  # sorted position of the latest one so far
        prev_pos = np.r_[-1, last_pos[:-1]]
        last_before = np.where(prev_pos >= gstarts[gid], cnt[np.maximum(prev_pos, 0)], last0[gid])
        credit = dup & ~struct & (cnt - last_before <= 2 * _RAW)
        # A step from an input the client had re-sent exactly: those re-sends were the search querying its current
        # best (Square queries its start point more than once), not retries; they count once the step shows it (up
        # to _RAW of them, and only those too long after a step to have counted already). A step that changes the
        # predicted class of its base found what a search looks for.
        retro = np.where(cnt - last_before > 2 * _RAW, np.minimum(base_rep, _RAW), 0)
        s_flip = struct & (e_pred[p - np.maximum(base_r, 1)].astype(np.int64) != predo)
        x_s = np.where(struct | credit, 1.0 + struct * (retro + s_flip), np.where(near, -1.0, -0.25))
        # --- ring write-back: each client's last min(h, new) events (older entries stay where they are)
        wk = np.flatnonzero(j_in >= m_g[gid] - h)
        wslot = gslot[gid[wk]]
        rpos = (cnt_g[gid[wk]] + j_in[wk]) % h
        flat = wslot * h + rpos  # distinct: a client's last <= h events go to distinct ring positions
        _put_rows(self._ring.reshape(-1, dd), flat, _take_rows(z16, wk))
        self._ring_pred.ravel()[flat] = e_pred[p[wk]]
        self._ring_seq.ravel()[flat] = e_seq[p[wk]].astype(np.uint32)

        # --- segmented scans
        def cusum(x: F64, ev0: F64) -> F64:
            """Per-client CUSUM ``max(0, ev + x)`` from ``ev0`` (exact: the steps are multiples of 1/4)."""
            wv = ev0[gid] + seg(x)
            big_off = 2.0 * float(np.abs(wv).max()) + 2.0
            off = -big_off * gid
            run_min = np.minimum.accumulate(wv + off) - off
            out_: F64 = wv - np.minimum(0.0, run_min)
            return out_

        ev = cusum(inc - (inc == 0), self._ev[gslot].astype(np.float64))
        ev_s = cusum(x_s, self._ev_s[gslot].astype(np.float64))
        n_struct = n_struct0[gid] + seg(struct.astype(np.int64))
        n_flip = self._n_flip[gslot][gid] + seg(flip.astype(np.int64))
        n_knn = self._n_knn[gslot][gid] + seg(tight.astype(np.int64))
        n_line = self._n_line[gslot][gid] + seg(line.astype(np.int64))
        n_low = self._n_low[gslot][gid] + seg(low.astype(np.int64))
        close = (d1 >= t_near) & (d1 < t_close)
        oo = is_ood[order] & ~near  # resent copies of one ood input count once
        n_ext = self._n_ext[gslot][gid] + j_in + 1
        n_ood = self._n_ood[gslot][gid] + seg(oo.astype(np.int64))
        n_close = self._n_close[gslot][gid] + seg(close.astype(np.int64))
        # per-class counts of each client before the batch; after it, plus the batch's counts (a bincount)
        cls0 = _take_rows(self._classes, gslot).astype(np.int64)
        n_cls = cls0.shape[1]
        has_cls = predo >= 0
        cls_end = cls0 + np.bincount(gid[has_cls] * n_cls + predo[has_cls], minlength=n_g * n_cls).reshape(n_g, n_cls)

        def classes_at(e: I64) -> I64:
            """Class counts of the client of each sorted event ``e``, up to it (running sums over the batch;
            only the classes predicted in it move)."""
            kc = int(predo.max(initial=-1)) + 1
            onehot = np.zeros((n, kc), dtype=np.int64)
            if kc:
                onehot[rr, np.maximum(predo, 0)] = has_cls
            c = cls0[gid[e]]
            c[:, :kc] += seg(onehot)[e]
            return c

        # decayed rate over the running maximum of event time
        tso = ts[order]
        last0 = np.where(cnt_g > 0, self._last_ts[gslot], tso[gstarts])
        toff = (np.int64(1) << 40) * gid
        tmax = np.maximum(np.maximum.accumulate(tso + toff) - toff, last0[gid])
        tau_ms = art.rate_tau_s * 1000.0
        acc, rate = _decayed_rates(
            tmax, _rate_coords(last0, tau_ms)[0], self._rate_acc[gslot] * (cnt_g > 0), gstarts, m_g, tau_ms
        )
        n_seen = np.empty(n, dtype=np.int64)
        n_seen[order] = cnt + 1  # the client's events so far, this one included
        ends = gstarts + m_g - 1
        self._count[gslot] = cnt_g + m_g
        self._ev[gslot] = ev[ends]
        self._ev_s[gslot] = ev_s[ends]
        self._n_struct[gslot] = np.minimum(n_struct[ends], np.iinfo(np.uint16).max)
        moved = last_pos[ends] >= gstarts
        self._struct_at[gslot[moved]] = (cnt[last_pos[ends][moved]] & 0xFFFFFFFF).astype(np.uint32)
        self._anchor[gslot] |= np.logical_or.reduceat(idd_ev, gstarts)
        self._n_flip[gslot] = n_flip[ends]
        self._n_knn[gslot] = n_knn[ends]
        self._n_line[gslot] = n_line[ends]
        self._n_low[gslot] = n_low[ends]
        self._n_ext[gslot] = n_ext[ends]
        self._n_ood[gslot] = n_ood[ends]
        self._n_close[gslot] = n_close[ends]
        _put_rows(self._classes, gslot, cls_end)
        self._rate_acc[gslot] = acc[ends]
        self._last_ts[gslot] = tmax[ends]
        # --- levels per kind (0 calm, 1 info, 2 warning, 3 critical)
        thr = self.evasion_threshold
        score = np.maximum(ev, ev_s)
        lev_e = np.where(score >= 3 * thr, 3, np.where(score >= thr, 2, 0))
        px = np.ones(n)
        stat_x = np.zeros(n, dtype=np.int64)  # 0 ood, 1 close, 2 coverage
        # significance and effect: a rate far above the reference rate, and at least ``min_share`` of the queries
        cand_o = have_ood & (n_ood >= 3) & (n_ood >= self.min_share * n_ext) & (pood < _POP_OOD)
        cand_c = (n_ext >= self.min_events) & (n_close >= 3) & (n_close >= self.min_share * n_ext)
        if cand_o.any():
            px[cand_o] = stats.binom.sf(n_ood[cand_o] - 1, n_ext[cand_o], art.p_ood)
        if cand_c.any():
            p_c = np.ones(n)
            p_c[cand_c] = stats.binom.sf(n_close[cand_c] - 1, n_ext[cand_c], art.p_close)
            stat_x = np.where(p_c < px, 1, 0)
            px = np.minimum(px, p_c)
        lev_x = np.where(px < self.alpha**2, 3, np.where(px < self.alpha, 2, 0))
        vol = (cnt + 1 >= art.volume_info) & (lev_x == 0)
        if vol.any():
            cls = classes_at(np.flatnonzero(vol)).astype(np.float64)
            pr = cls / np.maximum(cls.sum(axis=1, keepdims=True), 1)
            with np.errstate(invalid="ignore", divide="ignore"):
                ent = -(np.where(pr > 0, pr * np.log(np.where(pr > 0, pr, 1)), 0)).sum(1)
            kcls = np.maximum((cls > 0).sum(axis=1), 2)
            cover = np.zeros(n, dtype=bool)
            cover[vol] = ent >= 0.9 * np.log(kcls)
            lev_x = np.where(cover, 1, lev_x)
            stat_x = np.where(cover, 2, stat_x)
        rate_s = rate / art.rate_tau_s
        lev_f = np.where(rate_s >= 4 * art.rate_max, 3, np.where(rate_s >= art.rate_max, 2, 0))
        levels = np.stack([lev_e, lev_x, lev_f], axis=1)
        calms = np.stack([score == 0, (lev_x == 0) & ~oo & ~close, rate_s < 0.5 * art.rate_max], axis=1)
        # --- incident state machine; only clients with something open, cooling or firing step event by event
        # A client's run of one kind is quiet (the machine emits nothing on it; see ``_quiet_run``) when, with no
        # incident open, no event has a level once the cooldown has run out; or, with one open, no event raises the
        # level and the calm streak cannot reach ``resolve_after`` inside the run. Those runs' cooldown and calm
        # streak are set here for every client at once; the other runs step through the machine below.
        cur_g = _take_rows(self._level, gslot).astype(np.int64)
        cool_g = _take_rows(self._cool, gslot).astype(np.int64)
        calm_g = _take_rows(self._calm, gslot).astype(np.int64)
        due = (levels > 0) & (j_in[:, None] >= _take_rows(cool_g, gid))
        opens = np.logical_or.reduceat(due, gstarts, axis=0)
        ups = np.logical_or.reduceat(levels > _take_rows(cur_g, gid), gstarts, axis=0)  # every group is non-empty
        m2 = m_g[:, None]
        active = np.where(cur_g == 0, opens, ups | (calm_g + m2 >= self.resolve_after))
        last_break = np.maximum.reduceat(np.where(calms, -1, j_in[:, None]), gstarts, axis=0)
        calm_end = np.where(cur_g == 0, 0, np.where(last_break < 0, calm_g + m2, m2 - 1 - last_break))
        _put_rows(self._cool, gslot, np.maximum(cool_g - m2, 0))
        _put_rows(self._calm, gslot, calm_end)
        busy = np.flatnonzero(active.any(axis=1))
        seq_o = seqs[order]

        # where an incident opens if nothing is open: the first event with a level once the cooldown has run out
        first_on = np.minimum.reduceat(np.where(due, j_in[:, None], n), gstarts, axis=0)
        recs: list[tuple[int, Status, int, int, int, int]] = []  # (kind, status, slot, level, sorted event, incident)
        for g in busy.tolist():
            sl = int(gslot[g])
            a, b = int(gstarts[g]), int(gstarts[g] + m_g[g])
            for kind in np.flatnonzero(active[g]).tolist():
                cur, cool, calm = int(cur_g[g, kind]), int(cool_g[g, kind]), int(calm_g[g, kind])
                lv_k, cm_k = levels[a:b, kind], calms[a:b, kind]
                if cur > 0:
                    quiet_run = _quiet_run(lv_k, cm_k, cur, cool, calm, self.resolve_after)
                    if quiet_run is not None:  # most events of a busy client change nothing: skip the loop
                        self._cool[sl, kind], self._calm[sl, kind] = quiet_run
                        continue
                q = 0
                while q < b - a:
                    # Jump to the client's next record of this kind (open, update or resolved), stepping the
                    # state over the events before it in numpy: as the event-by-event machine would, where
                    # an event opens once the cooldown has run out, updates above the current level, and
                    # resolves after ``resolve_after`` calm events in a row.
                    if q == 0 and cur == 0:
                        nxt: tuple[int, Status] | None = (int(first_on[g, kind]), "open")  # an active run opens
                    else:
                        nxt = _next_record(lv_k[q:], cm_k[q:], cur, cool, calm, self.resolve_after)
                    if nxt is None:  # no record in the rest of the run
                        cool, calm = _run_state(cm_k[q:], cur, cool, calm)
                        break
                    t, status = nxt
                    cool, calm = _run_state(cm_k[q : q + t], cur, cool, calm)  # the events before the record
                    q += t
                    e = a + q
                    if status == "open":
                        self._incident[sl, kind] = seq_o[e]
                    if status != "resolved":
                        cur = int(lv_k[q])
                    calm, cool = 0, max(cool - 1, 0)
                    self._level[sl, kind] = cur
                    level = cur if status != "resolved" else 1
                    recs.append((kind, status, sl, level, e, int(self._incident[sl, kind])))
                    if status == "resolved":
                        cur, calm, cool = 0, 0, self.cooldown
                    q += 1
                self._level[sl, kind] = cur
                self._cool[sl, kind] = cool
                self._calm[sl, kind] = calm
        if recs:
            # the records' statistics, gathered for all of them at once
            ee = np.asarray([r[4] for r in recs], dtype=np.int64)
            cols = zip(
                score[ee].tolist(), d1[ee].tolist(), knn[ee].tolist(), n_flip[ee].tolist(), n_knn[ee].tolist(),
                n_line[ee].tolist(), n_struct[ee].tolist(), (cnt[ee] + 1).tolist(), n_ood[ee].tolist(),
                n_close[ee].tolist(), n_ext[ee].tolist(), rate_s[ee].tolist(), seq_o[ee].tolist(),
                e_seq[nb[ee]].tolist(), tso[ee].tolist(), event_ids[order[ee]].tolist(), px[ee].tolist(),
                stat_x[ee].tolist(), strict=True,
            )  # fmt: skip
            for (kind, status, sl, level, e, incident), c in zip(recs, cols, strict=True):
                sc_, d1_, knn_, fl_, tk_, ln_, ss_, ev_, oe_, ce_, xe_, rt_, s_e, s_nb, ts_e, eid, px_, sx_ = c
                st = {
                    "search_score": sc_,
                    "nearest_distance": d1_ if math.isfinite(d1_) else None,
                    "knn_distance": knn_ if math.isfinite(knn_) else None,
                    "flips": fl_,
                    "tight_knn": tk_,
                    "line_steps": ln_,
                    "structured_steps": ss_,
                    "events": ev_,
                    "ood_events": oe_,
                    "close_events": ce_,
                    "extraction_events": xe_,
                    "rate_per_s": rt_,
                }
                nseq = s_e - ((s_e - s_nb) & 0xFFFFFFFF) if math.isfinite(d1_) else -1
                heavy = self._heavy_at(sketch0, s[: order[e] + 1]) if kind == FLOOD else None
                rec = (kind, status, sl, level, s_e, ts_e, str(eid), nseq, px_, sx_, st, heavy)
                out.append(self._decision(*rec, base=base, incident=incident))
        ood_only = np.zeros(n, dtype=np.int64)
        if have_ood:
            ood_only[order] = np.where(oo & (n_ood == n_ext) & (pood < _POP_OOD), n_ood, 0)
        layout = _Layout(e_z, gslot, e_start, e_start + f_g, order, so * n + order)
        return n_seen, sc_rows, layout, ood_only

    def _structured(
        self,
        raw16: npt.NDArray[np.float16],
        fp: npt.NDArray[np.uint8],
        order: I64,
        gslot: I64,
        gid: I64,
        m_g: I64,
        cnt_g: I64,
        j_in: I64,
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], I64, I64]:
        """Per event (sorted by client, as in ``_process``): whether it is a structured step from one of its client's
        previous ``_RAW`` queries, whether it repeats one exactly, how many queries back the step's base is (0: no
        step), and how often the base had been re-sent exactly (a chain of exact repeats, each of one of the
        ``_RAW`` queries before it). Writes the events to the clients' raw rings.

        Against each earlier query: ``changed`` blocks of the exact fingerprints differ, ``nnz`` float16 coordinates
        differ. A repeat changes no block. A structured step changes some, and either few coordinates (at most
        the artifact's ``struct_coords``, estimated from both) or, in the earlier query with the fewest changed
        coordinates, at least its ``struct_share`` of them by the median |delta| (within ``_STRUCT_REL`` of it plus
        float16 rounding, which must be small next to it). Each client's raw ring and its batch events are laid out
        as in ``_process`` (float16 bit patterns), so the result does not depend on the batching."""
        n, fs = raw16.shape
        nb = fp.shape[1]
        f = self.artifact.n_features
        limit = self.artifact.struct_coords
        n_g = len(gslot)
        sc = self._scratch
        fr = np.minimum(cnt_g, _RAW)  # ring entries of each client
        lr = fr + m_g
        rs = np.cumsum(lr) - lr
        tot = int(lr.sum())
        vals = sc.get("st.vals", (tot, fs), np.uint16)
        fps = sc.get("st.fps", (tot, nb), np.uint8)
        ring = self._raw.reshape(-1, fs).view(np.uint16)
        ring_fp = self._raw_fp.reshape(-1, nb)
        tf = int(fr.sum())
        if tf:
            grp = np.repeat(np.arange(n_g), fr)
            i = np.arange(tf) - np.repeat(np.cumsum(fr) - fr, fr)
            flat_in = gslot[grp] * _RAW + (cnt_g[grp] - fr[grp] + i) % _RAW
            dst = rs[grp] + i
            _put_rows(vals, dst, _take_rows(ring, flat_in))
            _put_rows(fps, dst, _take_rows(ring_fp, flat_in))
        rp = rs[gid] + fr[gid] + j_in
        r16 = _take_rows(raw16.view(np.uint16), order)
        fpo = _take_rows(fp, order)
        _put_rows(vals, rp, r16)
        _put_rows(fps, rp, fpo)
        wk = np.flatnonzero(j_in >= m_g[gid] - _RAW)  # each client's last min(_RAW, new) events go to its ring
        flat = gslot[gid[wk]] * _RAW + (cnt_g[gid[wk]] + j_in[wk]) % _RAW
        _put_rows(ring, flat, _take_rows(r16, wk))
        _put_rows(ring_fp, flat, _take_rows(fpo, wk))
        avail = fr[gid] + j_in
        struct = np.zeros(n, dtype=bool)
        dup = np.zeros(n, dtype=bool)
        base_r = np.zeros(n, dtype=np.int64)  # the structured step's base, queries back (the most recent one)
        dup_r = np.zeros(n, dtype=np.int64)  # the query repeated, queries back (the most recent one)
        best = np.full(n, fs + 1, dtype=np.int64)  # fewest changed coordinates among the share-test candidates
        best_r = np.zeros(n, dtype=np.int64)
        fpo64 = fpo.view(np.uint64)
        for r in range(1, _RAW + 1):
            e = np.flatnonzero(avail >= r)
            q = rp[e]
            every = len(e) == n
            x = (fpo64 if every else fpo64[e]) ^ _take_rows(fps, q - r).view(np.uint64)
            x |= x >> _U64(1)
            x |= x >> _U64(2)
            x &= _U64(0x1111111111111111)  # one bit per 4-bit block: set where the block differs
            changed = np.bitwise_count(x).sum(axis=1, dtype=np.int64)
            ne = (r16 if every else r16[e]) != _take_rows(vals, q - r)
            nnz = ne.view(np.uint8).sum(axis=1, dtype=np.uint8).astype(np.int64)  # float16 values that differ
            same = changed == 0
            dup_r[e[same & ~dup[e]]] = r
            dup[e] |= same
            sparse = (changed >= 1) & (changed <= min(limit, 3 * _FP_BLOCKS // 4)) & (nnz * f <= limit * fs)
            base_r[e[sparse & ~struct[e]]] = r
            struct[e] |= sparse
            cand = (changed >= 1) & ~sparse & (nnz >= 2) & (nnz < best[e])
            best[e[cand]] = nnz[cand]
            best_r[e[cand]] = r
        t = np.flatnonzero((best_r > 0) & ~struct)
        if len(t):
            share = _step_share(_take_rows(r16, t), _take_rows(vals, rp[t] - best_r[t]))
            ok = share >= self.artifact.struct_share
            struct[t] = ok
            base_r[t[ok]] = best_r[t[ok]]
        # Exact re-sends, back to back: an event repeating the query ``dup_r`` back was sent once more than it. A
        # client's chain of repeats can span the batch, so the counts are path lengths (over the repeats only); the
        # ring's entries bring their counts from earlier batches.
        reps = sc.get("st.reps", (tot,), np.int64)
        reps[...] = 0
        if tf:
            reps[dst] = self._raw_rep.reshape(-1)[flat_in]
        d_i = np.flatnonzero(dup)
        if len(d_i):
            at = rp[d_i]
            src = at - dup_r[d_i]
            pos = np.full(tot, -1, dtype=np.int64)  # where each repeat is among d_i
            pos[at] = np.arange(len(d_i))
            nxt = pos[src]  # -1: the chain ends at a query that repeats nothing (its own count, from the ring)
            reps[at] = _chain_sums(nxt, 1 + np.where(nxt < 0, reps[src], 0))
        base_rep = np.where(struct, reps[rp - base_r], 0)
        wr = rp[wk]
        self._raw_rep.reshape(-1)[flat] = np.minimum(reps[wr], 255).astype(np.uint8)
        return struct, dup, base_r, base_rep

    def _population(self, z: npt.NDArray[np.float32], is_ood: npt.NDArray[np.bool_]) -> tuple[F64, F64]:
        """Population gate seen by every event (stream order, state before the event): the distance scale
        ``min(1, sqrt(current spread / reference spread))`` and the share of ood events, both decayed means
        over events. The spread is that of all queries around their mean, which near-duplicate searches do not
        shrink (they sit around points of their own), but a population-wide gain change does. Updates the state.
        """
        n, dd = z.shape
        spread = self.artifact.spread
        gate = bool(np.isfinite(spread) and spread > 0)
        scale = np.ones(n)
        pood = np.empty(n)
        r = 1.0 - _POP_DECAY
        chunk = _POP_CHUNK
        # chunk by chunk (every step but the running sum is row-wise), in a reused buffer laid out one sum per row
        # (each running sum contiguous): column 0 holds the sums before the chunk, column j + 1 those after event j
        xt = self._scratch.get("pop.x", (dd + 3, min(n, chunk) + 1), np.float64)
        for c0 in range(0, n, chunk):
            c1 = min(n, c0 + chunk)
            m = c1 - c0
            xa, zc = xt[:, : m + 1], z[c0:c1]
            xa[:, 0] = self._pop
            xc = xa[:, 1:]
            xc[0] = 1.0
            xc[1 : dd + 1] = zc.T
            xc[dd + 1] = (zc.astype(np.float64) ** 2).sum(axis=1)
            xc[dd + 2] = is_ood[c0:c1]
            # after = r**j * (r * pop + cumsum(x * r**-j)), in place
            xc *= _POP_POW[1, :m]
            np.cumsum(xc, axis=1, out=xc)
            xc += (r * self._pop)[:, None]
            xc *= _POP_POW[0, :m]
            self._pop = xa[:, m].copy()
            bc = xa[:, :m]  # the sums each event sees (before it)
            w = np.maximum(bc[0], 1e-12)
            pood[c0:c1] = bc[dd + 2] / w
            if gate:
                mean = np.ascontiguousarray(bc[1 : dd + 1].T) / w[:, None]  # row-major: the row sums below as before
                var = np.maximum(bc[dd + 1] / w - (mean**2).sum(axis=1), 0.0)
                scale[c0:c1] = np.minimum(1.0, np.sqrt(var / spread))
        return scale, pood

    def _decision(
        self,
        kind: int,
        status: Status,
        s: int,
        level: int,
        seq: int,
        ts: int,
        event_id: str,
        nearest_seq: int,
        px: float,
        stat_x: int,
        st: dict[str, Any],
        heavy: list[tuple[str, int, int]] | None = None,
        *,
        base: int,
        incident: int,
    ) -> AlertDecision:
        """Client ``s``'s record of ``kind`` at stream position ``seq`` (row ``seq - base`` of the batch) of its
        incident opened at ``incident``."""
        art = self.artifact
        client = self._name(str(self._ids[s]))
        if kind == EVASION:
            statistic, value, threshold, p = "search_score", st["search_score"], self.evasion_threshold, None
            msg = (
                f"client {client} is searching along the decision boundary: {st['flips']} class flips among "
                f"near-duplicates, {st['tight_knn']} tight k-NN queries, {st['line_steps']} line steps, "
                f"{st['structured_steps']} structured steps"
            )
        elif kind == EXTRACTION:
            if stat_x == 2:
                statistic, value, threshold, p = "volume_coverage", float(st["events"]), art.volume_info, None
                msg = (
                    f"client {client} queried {st['events']} times covering all classes evenly "
                    "(natural-data extraction?)"
                )
            else:
                statistic = "ood_rate" if stat_x == 0 else "close_query_rate"
                num = st["ood_events"] if stat_x == 0 else st["close_events"]
                value = num / max(st["extraction_events"], 1)
                threshold = art.p_ood if stat_x == 0 else art.p_close
                p = px
                msg = (
                    f"client {client}: {num} of {st['extraction_events']} queries "
                    f"{'out of distribution' if stat_x == 0 else 'synthetic-looking (close to an earlier query)'}"
                    f", reference rate {threshold:.1e} (p={px:.1e})"
                )
        else:
            statistic, value, threshold, p = "rate_per_s", st["rate_per_s"], art.rate_max, None
            msg = f"client {client} sends {value:.1f} queries/s, normal ceiling {threshold:.2f}/s"
        evidence: dict[str, Any] = {
            "event_id": event_id,
            "event_seq": seq,
            "nearest_event_seq": nearest_seq,
            "incident_seq": incident,
            **st,
        }
        if kind == FLOOD:
            evidence["heavy_hitters"] = heavy if heavy is not None else self.heavy_hitters_top(5)
        return AlertDecision(
            kind=KINDS[kind],
            status=status,
            severity=_SEV[level] if status != "resolved" else "info",
            columns=(),
            statistic=statistic,
            value=float(value),
            threshold=float(threshold),
            p_value=p,
            event_index=seq - base,
            pane=seq,
            incident=incident,
            window_start_ts=ts,
            window_end_ts=ts,
            window_events=int(st["events"]),
            window_start_seq=incident,
            message=msg,
            evidence=evidence,
            client_id=client,
        )

    # ------------------------------------------------------------------------------------- campaigns

    def _ood_campaign(
        self, n_ood: I64, slots: I64, seqs: I64, ts: I64, clock: I64, event_ids: npt.NDArray[Any], base: int
    ) -> list[AlertDecision]:
        """Extraction split over many accounts (uniform-random queries, a few per account): no account sends enough
        for its own ood test, but together they send far more ood queries than benign traffic does.

        ``n_ood`` is, for each of the batch's ood queries from an account all of whose queries so far are ood, that
        account's count of them (0 for every other event; a resent ood input counts once, so one odd input retried
        makes no such account). The number of such queries among the last ``ood_window`` events (stream order, this
        one included) is tested against ``Binomial(ood_window, p_ood)``: benign traffic sends ood queries at the
        reference rate, and these are a subset of them. The test says an extraction is under way; an account is
        named only on its own evidence as well, at least two ood queries and nothing else, or one far out
        (``far_ood``; ``n_ood`` is 2 for it) and nothing else (a benign account whose first query happens to be
        ood, during an attack, is not named; one whose first query is far out, beyond the anomaly detector's
        ``fpr**2``, may be). At such an event where the count is
        significant (``_ood_k``) and the window holds ``campaign_clients`` such accounts, a campaign opens listing
        them; later ones join it. An ``update`` names those that joined since the last record once
        ``campaign_interval_s`` of stream time (the largest event time so far) has passed since it, at the
        first event of any kind by then, or at once when ``campaign_members`` have joined (an extraction spread
        over hundreds of accounts, each of which should be blocked; the record lists the latest
        ``campaign_members``). It is ``resolved`` at the event ``ood_window`` events after its last query that
        counted in a significant window (``clock``: the stream time at each event). The count is a
        running sum over the window's entries and the batch's, so the batching does not matter; only the flagged
        events of a significant window step through the (small) loop below.
        """
        n = len(n_ood)
        flag = n_ood > 0
        w = self.ood_window
        tail = np.arange(max(0, n - w), n)
        at = (self._on + tail) % w  # event k of the stream is kept at position k % w
        oc = self._oc
        if not flag.any() and oc[0] < 0:
            self._oring[at] = 0
            self._on += n
            return []
        # the window before the batch, oldest first, then the batch
        prev = np.roll(self._oring, -(self._on % w), axis=0)
        cur = np.zeros((n, 3), dtype=np.int64)
        cur[flag, 0] = self._uid[slots[flag]]
        cur[flag, 1] = slots[flag]
        cur[flag, 2] = n_ood[flag]
        allv = np.concatenate([prev, cur])
        cs = np.r_[0, np.cumsum(allv[:, 0] > 0)]
        count = cs[w + 1 : w + n + 1] - cs[1 : n + 1]  # flagged among the last w events, each event included
        cs2 = np.r_[0, np.cumsum(allv[:, 2] >= 2)]
        twice = cs2[w + 1 : w + n + 1] - cs2[1 : n + 1]  # of those, second (or later) ones of their account
        out: list[AlertDecision] = []
        every = round(self.campaign_interval_s * 1000)

        def settle(until: int) -> None:
            """Before row ``until``: the update naming the accounts joined since the last record, at the first
            event by which ``campaign_interval_s`` has passed, and, up to row ``until``, the ``resolved`` record at
            the event ``ood_window`` events after the campaign's last significant query (naming any unnamed)."""
            if oc[0] < 0:
                return
            end = min(oc[3] + w + 1 - self._on, n)
            r = int(np.searchsorted(clock, oc[6] + every)) if oc[5] > oc[1] else until
            if r < min(until, end):
                out.append(self._ood_report(int(count[r]), r, int(clock[r]), seqs, ts, event_ids, base))
            if end < until or end == until < n:  # (at a significant query itself: it may open the next one)
                out.append(self._ood_report(int(count[end]), end, int(clock[end]), seqs, ts, event_ids, base, True))
                oc[0], oc[1], oc[2], oc[5], oc[7] = -1, 0, -1, 0, 0  # a later one is another campaign
                self._oc_members = []

        q = np.flatnonzero(flag & (count >= self._ood_k))
        # (plain ints: most of these events only move the campaign's last significant position)
        for i, seq, n_i, tw in zip(q.tolist(), seqs[q].tolist(), n_ood[q].tolist(), twice[q].tolist(), strict=True):
            settle(i)
            if oc[0] < 0:
                if tw < self.campaign_clients:  # (fewer accounts to name than needed, whoever they are)
                    continue
                win = allv[i + 1 : w + i + 1]
                win = win[win[:, 2] >= 2]
                uids, first = np.unique(win[:, 0], return_index=True)
                by_first = np.argsort(first)
                sl = win[first, 1][by_first]
                sl = sl[self._uid[sl] == uids[by_first]]  # (an account evicted since is not named)
                if len(sl) < self.campaign_clients:
                    continue
                names = [str(self._ids[x]) for x in sl.tolist()]
                oc[0], oc[2], oc[4], oc[5] = oc[4], seq, oc[4] + 1, len(names)
                self._oc_members = names[-self.campaign_members :]
            elif n_i >= 2:
                name = str(self._ids[slots[i]])
                if name not in self._oc_members:
                    self._oc_members = [*self._oc_members[1 - self.campaign_members :], name]
                    oc[5] += 1
            oc[3] = self._on + i
            oc[7] = max(oc[7], int(count[i]))
            new = oc[5] - oc[1]
            if (
                new >= self.campaign_clients
                if oc[1] == 0
                else new > 0 and (clock[i] >= oc[6] + every or new >= self.campaign_members)
            ):
                out.append(self._ood_report(int(count[i]), i, int(clock[i]), seqs, ts, event_ids, base))
        settle(n)
        self._oring[at] = cur[tail]
        self._on += n
        return out

    def _ood_report(
        self,
        count: int,
        i: int,
        now: int,
        seqs: I64,
        ts: I64,
        event_ids: npt.NDArray[Any],
        base: int,
        resolved: bool = False,
    ) -> AlertDecision:
        """The extraction campaign's record at row ``i`` (stream time ``now``): ``open`` at its first report, then
        ``update``, or ``resolved``; it names the accounts joined since the last one (``evidence.new_clients``)."""
        oc = self._oc
        n_mem, new = oc[5], oc[5] - oc[1]
        status: Status = "resolved" if resolved else "open" if oc[1] == 0 else "update"
        oc[1], oc[6] = n_mem, now
        p = float(self._ood_tail[count - 1]) if count > 0 else 1.0
        clients = self._names(self._oc_members)
        return AlertDecision(
            kind="model_extraction",
            status=status,
            severity="info" if resolved else "critical" if oc[7] >= self._ood_k2 else "warning",
            columns=(),
            statistic="ood_only_queries",
            value=float(count),
            threshold=float(self._ood_k),
            p_value=p,
            event_index=int(seqs[i]) - base,
            pane=int(seqs[i]),
            incident=int(oc[2]),
            window_start_ts=int(ts[i]),
            window_end_ts=int(ts[i]),
            window_events=self.ood_window,
            window_start_seq=int(oc[2]),
            message=(
                f"extraction campaign x{oc[0]}: {count} of the last {self.ood_window} queries are out of distribution "
                f"from {n_mem} clients that send nothing else (reference rate {self.artifact.p_ood:.1e}, p={p:.1e}); "
                f"{new} joined since the last record"
                + (f"; ended: none stood out in the {self.ood_window} events since its last" if resolved else "")
            ),
            evidence={
                "campaign": f"x{oc[0]}",
                "clients": clients,
                "new_clients": clients[len(clients) - min(new, len(clients)) :],
                "n_clients": n_mem,
                "ood_only_queries": count,
                "window_events": self.ood_window,
                "event_id": str(event_ids[i]),
                "event_seq": int(seqs[i]),
            },
            client_id=None,
        )

    def _merge(self, ca: int, cb: int) -> int:
        """Fold one campaign into the other (the reported, else the older one survives); its id."""
        keep, drop = (
            (ca, cb) if (self._camps[ca].reported > 0, -ca) >= (self._camps[cb].reported > 0, -cb) else (cb, ca)
        )
        d = self._camps.pop(drop)
        kc = self._camps[keep]
        kc.links += d.links
        kc.boundary_hits += d.boundary_hits
        kc.members = list(dict.fromkeys(kc.members + d.members))[: self.campaign_members]
        kc.probe_hits += d.probe_hits
        kc.last_link = max(kc.last_link, d.last_link)
        kc.walk_links += d.walk_links
        kc.level = max(kc.level, d.level)
        kc.confirmed += d.confirmed
        kc.last_ts = max(kc.last_ts, d.last_ts)
        for name in d.members:
            sl = self._index.get(name)
            if sl is not None and self._campaign[sl] == drop:
                self._campaign[sl] = keep
        return keep

    def _count_boundary_hits(
        self, sel: I64, hi: I64, h_s: I64, h_o: I64, flip_h: npt.NDArray[np.bool_], n_seen: I64, limit: int
    ) -> int:
        """Apply the leading hits of ``sel`` (hit indices, stream order) that only count boundary hits, in numpy;
        return how many were applied (the campaign loop goes on from there). At most ``limit`` are applied.

        Before the first hit that touches a campaign member or lets a client join (enough boundary hits), the
        loop of ``_campaigns`` only adds each flip to both clients' ``_camp_hits``: that prefix is a bincount.
        """
        if len(sel) == 0:
            return 0
        s_, o_, f_ = h_s[sel], h_o[sel], flip_h[sel]
        member = (self._campaign[s_] >= 0) | ((o_ >= 0) & (self._campaign[np.maximum(o_, 0)] >= 0))
        # each flip adds one to its client and to the matched one (if still tracked); running totals per slot
        k = np.flatnonzero(f_)
        inc_hit = np.concatenate([k, k[o_[k] >= 0]])
        inc_slot = np.concatenate([s_[k], o_[k][o_[k] >= 0]])
        ordr = np.lexsort((inc_hit, inc_slot))  # by slot, then hit order (a hit's two slots differ)
        hs, ss = inc_hit[ordr], inc_slot[ordr]
        first = np.r_[True, ss[1:] != ss[:-1]] if len(ss) else np.zeros(0, dtype=bool)
        run = np.arange(len(ss)) - np.maximum.accumulate(np.where(first, np.arange(len(ss)), 0))
        total = np.empty(len(sel), dtype=np.int64)  # the client's boundary hits once hit j is counted
        own = np.flatnonzero(ss == s_[hs])  # the increment of each flip's own client
        total[hs[own]] = self._camp_hits[ss[own]] + run[own] + 1
        joins = f_ & (total >= np.maximum(2.0, self.campaign_share * n_seen[hi[sel]]))
        stop = np.flatnonzero(member | joins)
        cut = min(int(stop[0]) if len(stop) else len(sel), limit)
        done = hs < cut
        np.add.at(self._camp_hits, ss[done], 1)
        return cut

    def _probe_edges(
        self, probes: tuple[I64, I64, I64, I64, I64], slots: I64, n_seen: I64, key: I64
    ) -> tuple[
        I64, I64, I64, I64, npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.bool_]
    ]:
        """Count every probe hit for both clients (``_probe``) and return the hits that link a campaign: (event
        rows, querying slots, matched slots, matched seqs, whether the querying and the matched client qualify,
        whether the hit is a walk step (changed blocks -1), and whether it is its client's second query, the first
        one a walk step too).

        A hit *links* when, for both clients, their probe hits so far (this one included, as either side) are at
        least ``probe_share`` of their queries so far; a client *qualifies* (is listed) when they are also at least
        two. The accounts of a coordinate-wise search split over many ids send little but probe hits (each step is a
        near-copy of the step before, sent by another account), so each qualifies once a later step has matched its
        query; a benign client that sends the input a search started from (or a near-copy of one of its steps) gets
        a probe hit or two among many ordinary queries. All in numpy, in stream order: the counts are read at each
        hit's row, whatever the batching.
        """
        p_i, p_slot, p_uid, p_seq, p_ch = probes
        k = len(p_i)
        p_s = slots[p_i]
        p_o = np.where(self._uid[p_slot] == p_uid, p_slot, -1)  # -1: evicted since
        has_o = np.flatnonzero(p_o >= 0)
        inc_hit = np.concatenate([np.arange(k), has_o])
        inc_slot = np.concatenate([p_s, p_o[has_o]])
        ordr = np.lexsort((inc_hit, inc_slot))  # by slot, then hit order (a hit's two slots differ)
        hs, ss = inc_hit[ordr], inc_slot[ordr]
        first = np.r_[True, ss[1:] != ss[:-1]] if len(ss) else np.zeros(0, dtype=bool)
        run = np.arange(len(ss)) - np.maximum.accumulate(np.where(first, np.arange(len(ss)), 0))
        total = self._probe[ss].astype(np.int64) + run + 1
        is_s = ordr < k
        tot_s = np.zeros(k, dtype=np.int64)
        tot_o = np.zeros(k, dtype=np.int64)
        tot_s[hs[is_s]] = total[is_s]
        tot_o[hs[~is_s]] = total[~is_s]
        np.add.at(self._probe, inc_slot, 1)
        np.minimum(self._probe, np.iinfo(np.int32).max - 1, out=self._probe)
        # the matched client's count at the row: after the batch, minus its events from this row on
        n = len(slots)
        o0 = np.maximum(p_o, 0)
        cnt_o = self._count[o0] - (np.searchsorted(key, o0 * n + n) - np.searchsorted(key, o0 * n + p_i))
        share = self.probe_share
        s_ok = tot_s >= share * n_seen[p_i]
        q_s = s_ok & (tot_s >= 2)
        o_ok = (p_o >= 0) & (tot_o >= share * cnt_o)
        q_o = o_ok & (tot_o >= 2)
        e = np.flatnonzero(s_ok & o_ok)
        # walk steps: the client's own ones before each (in stream order); its second query when it has sent one
        walk = p_ch < 0
        wi = np.flatnonzero(walk)  # (stream order, so stable by slot)
        o_w = np.argsort(p_s[wi], kind="stable")
        ws = p_s[wi][o_w]
        w_first = np.r_[True, ws[1:] != ws[:-1]] if len(ws) else np.zeros(0, dtype=bool)
        before = np.zeros(k, dtype=np.int64)
        before[wi[o_w]] = (
            self._walks[ws] + np.arange(len(ws)) - np.maximum.accumulate(np.where(w_first, np.arange(len(ws)), 0))
        )
        np.add.at(self._walks, ws, 1)
        np.minimum(self._walks, 254, out=self._walks)
        second = walk & (n_seen[p_i] == 2) & (before == 1)
        return p_i[e], p_s[e], p_o[e], p_seq[e], q_s[e], q_o[e], walk[e], second[e]

    def _history_dist(self, z: npt.NDArray[np.float32], rows: I64, other: I64, slots: I64, layout: _Layout) -> F64:
        """For each batch row ``rows[k]``, the distance from its query to the nearest query of client ``other[k]``
        (-1: none, inf) as that client's history was at the row (:meth:`_ring_at`, for many rows at once)."""
        n, h = len(slots), self.history
        out = np.full(len(rows), np.inf)
        ok = other >= 0
        if not ok.any():
            return out
        r, o = rows[ok], other[ok]
        key = layout.key
        gs = layout.gslot
        g = np.minimum(np.searchsorted(gs, o), len(gs) - 1)
        inb = gs[g] == o
        # in this batch: the window of the layout ending after the client's events up to the row
        j = np.searchsorted(key, o * n + r + 1) - np.searchsorted(key, o * n)
        end = layout.bstart[g] + j
        start = np.maximum(layout.estart[g], end - h)
        idx = start[:, None] + np.arange(h)[None, :]
        valid = idx < end[:, None]
        hist = layout.e_z[np.where(valid, idx, 0)] if len(layout.e_z) else np.zeros((len(r), h, z.shape[1]), np.float32)
        # not in it: the stored ring (its order does not matter for a nearest query)
        out_b = ~inb
        if out_b.any():
            hist[out_b] = _widen16(self._ring[o[out_b]])
            valid[out_b] = np.arange(h)[None, :] < np.minimum(self._count[o[out_b]], h)[:, None]
        d2 = ((hist - z[r][:, None, :]) ** 2).sum(axis=2)
        d2[~valid] = np.inf
        out[ok] = np.sqrt(np.nan_to_num(d2.min(axis=1), nan=np.inf))
        return out

    def _ring_at(self, sl: int, i: int, key: I64, layout: _Layout) -> npt.NDArray[np.float32]:
        """Client ``sl``'s history as it was just after batch row ``i`` (its events up to that row; the ring
        holds the batch's later events too), as float32."""
        n = len(layout.order)
        g = int(np.searchsorted(layout.gslot, sl))
        if g == len(layout.gslot) or int(layout.gslot[g]) != sl:  # not in this batch: the ring is as it was
            return self._ring[sl, : min(int(self._count[sl]), self.history)].astype(np.float32)
        j = int(np.searchsorted(key, sl * n + i + 1) - np.searchsorted(key, sl * n))
        end = int(layout.bstart[g]) + j
        return layout.e_z[max(int(layout.estart[g]), end - self.history) : end]

    def _join(self, s: int, o: int, i: int, z: npt.NDArray[np.float32], key: I64, layout: _Layout) -> int:
        """The campaign a linking hit between clients ``s`` and ``o`` (-1: none) at row ``i`` belongs to: theirs
        (merged if they differ), the one either was last linked to, an ongoing one near the hit, else a new one."""
        ca = int(self._campaign[s])
        cb = int(self._campaign[o]) if o >= 0 else -1
        ca = ca if ca in self._camps else -1  # forgotten, or merged while over the member cap
        cb = cb if cb in self._camps else -1
        if ca < 0 and cb < 0:
            for lk in (int(self._camp_link[s]), int(self._camp_link[o]) if o >= 0 else -1):
                if lk in self._camps:
                    ca = lk
                    break
        if ca < 0 and cb < 0 and self._camps:
            # A new pair near an ongoing campaign joins it (one search, one campaign): near one of the
            # campaign's recent hits, this query or one of the pair's own earlier queries (a split
            # search that jumped ahead still has accounts whose last queries were where it probed before).
            # Ongoing: among the _CAMP_SCAN most recently active (``_camps`` is kept in that order), so traffic
            # rich in chance pairs does not make each new pair scan every campaign.
            cids = list(itertools.islice(reversed(self._camps), _CAMP_SCAN))
            rings = [self._camps[c].ring[: min(self._camps[c].links, _CAMP_RING)] for c in cids]  # (filled rows)
            cz = np.concatenate(rings)
            owner = np.repeat(np.arange(len(cids)), [len(r) for r in rings])
            pts = [z[i][None].astype(np.float32)]
            for sl in (s, o):
                if sl >= 0:
                    pts.append(self._ring_at(sl, i, key, layout)[-_CAMP_PAIR:])
            pz = np.concatenate(pts)
            d2 = np.nan_to_num(((cz[:, None, :] - pz[None, :, :]) ** 2).sum(axis=2), nan=np.inf).min(axis=1)
            if len(d2):
                j = int(np.argmin(d2))
                if np.sqrt(d2[j]) < self.campaign_radius * self.artifact.tau_close:
                    ca = cids[int(owner[j])]
        if ca < 0 and cb < 0:
            if len(self._camps) >= self.max_campaigns:  # forget the least recently active campaign
                self._forget(next(iter(self._camps)))
            cid = self._next_camp
            self._next_camp += 1
            ring = np.full((_CAMP_RING, z.shape[1]), np.nan, dtype=np.float32)
            self._camps[cid] = _Campaign(0, 0, 0, -1, [], ring, 0, -1, 0, 0, 0, _NO_SEQ)
            return cid
        if ca >= 0 and cb >= 0 and ca != cb:
            return self._merge(ca, cb)
        return ca if ca >= 0 else cb

    def _forget(self, cid: int) -> _Campaign:
        """Drop campaign ``cid``: its members belong to none any more. Returns its state."""
        c = self._camps.pop(cid)
        for name in c.members:
            at = self._index.get(name)
            if at is not None and self._campaign[at] == cid:
                self._campaign[at] = -1
        return c

    def _enlist(self, cid: int, slot: int) -> None:
        """Make client ``slot`` a member of campaign ``cid`` (listed while the campaign has room)."""
        c = self._camps[cid]
        self._campaign[slot] = cid
        name = str(self._ids[slot])
        if name not in c.members and len(c.members) < self.campaign_members:
            c.members.append(name)

    @staticmethod
    def _last_hits(c: _Campaign, k: int) -> F64:
        """The embeddings of the campaign's last ``k`` hits (``k <= min(links, _CAMP_RING)``), oldest first."""
        return c.ring[(c.links - k + np.arange(k)) % _CAMP_RING].astype(np.float64)

    def _moving(self, c: _Campaign) -> bool:
        """Whether the campaign's last hits make steady progress: their mean distance to their centroid is at least
        ``_MOVING`` times the median distance between consecutive ones. Copies of one input with noise stay near
        their centroid (about 0.7 times); a search's steps move on (HopSkipJump, Sign-OPT: 2-3 after 8 steps)."""
        k = min(c.links, _CAMP_RING, 16)
        if k < 6:
            return False
        pts = self._last_hits(c, k)
        step = float(np.median(np.sqrt(((pts[1:] - pts[:-1]) ** 2).sum(axis=1))))
        spread = float(np.sqrt(((pts - pts.mean(axis=0)) ** 2).sum(axis=1)).mean())
        return step > 0 and spread >= _MOVING * step

    def _on_line(self, c: _Campaign) -> bool:
        """Whether the campaign's last four hits lie on one line (consecutive steps with ``|cos| >= cos_line``): a
        binary or line search (HopSkipJump, Sign-OPT) split over accounts. Noisy copies of one input step in
        independent directions."""
        if c.links < 4:
            return False
        d = np.diff(self._last_hits(c, 4), axis=0)
        nrm = np.sqrt((d**2).sum(axis=1))
        if not (nrm > 0).all():
            return False
        cos = np.abs((d[1:] * d[:-1]).sum(axis=1)) / (nrm[1:] * nrm[:-1])
        return bool((cos >= self.artifact.cos_line).all())

    def _report(
        self, cid: int, i: int, seqs: I64, ts: I64, event_ids: npt.NDArray[Any], base: int
    ) -> AlertDecision | None:
        """Campaign ``cid``'s record at row ``i``: it opens once it links ``campaign_clients`` clients through
        ``campaign_hits`` hits (walk steps whose last four lie on one line, sooner), and is updated each time its
        member count doubles, or when an ``info`` campaign gains the evidence of a search.

        A campaign linked by walk steps alone, without class flips, probe hits, steady progress or a line, is
        ``info``:
        new accounts each sending one noisy copy of a popular out-of-distribution input look the same as a
        search split over accounts that has not moved yet (Boundary's first hundred steps)."""
        c = self._camps[cid]
        n_mem = len(c.members)
        hits = c.boundary_hits + c.probe_hits + c.walk_links
        walk_only = c.boundary_hits + c.probe_hits == 0
        if c.reported == 0 and n_mem < self.campaign_clients:
            return None
        if c.reported > 0 and n_mem < 2 * c.reported and c.level != 1:
            return None  # (no record due, and no info record to escalate: the evidence need not be read)
        line = walk_only and self._on_line(c)
        # walk steps along one line need not wait for ``campaign_hits``: chance links do not line up
        first_report = c.reported == 0 and (hits >= self.campaign_hits or line)
        if c.reported == 0 and not first_report:
            return None
        moving = walk_only and self._moving(c)
        search = not walk_only or moving or line or c.confirmed >= self.campaign_clients
        level = max(c.level, 1 if not search else 3 if n_mem >= 10 else 2)
        if not (first_report or n_mem >= 2 * c.reported or (c.level == 1 and level > 1)):
            return None
        status: Status = "open" if c.reported == 0 else "update"
        if c.reported == 0:
            c.incident = int(seqs[i])
        c.reported = n_mem
        c.level = level
        walks = (
            f", {c.walk_links} walk steps: a new out-of-distribution query near another client's"
            f"{' (moving steadily)' if moving else ''}{' (the last ones along one line)' if line else ''}; "
            f"{c.confirmed} accounts sent two and nothing else"
            if c.walk_links
            else ""
        )
        if search:
            message = (
                f"campaign c{cid}: one search split over {n_mem} clients ({c.boundary_hits} cross-client "
                f"near-duplicate boundary hits, {c.probe_hits} probe hits: another client's query with a few "
                f"coordinates changed{walks})"
            )
        else:
            message = (
                f"campaign c{cid}: possibly one search split over {n_mem} clients sending little else ({c.walk_links} "
                "walk steps: a new out-of-distribution query near another client's; no class flips, probe hits, "
                "steady progress or line yet: new accounts resending a popular out-of-distribution input with noise "
                "look the same)"
            )
        return self._record(
            cid,
            c,
            i,
            status,
            _SEV[level],
            message,
            c.members,
            {"moving": moving, "line": line},
            seqs,
            ts,
            event_ids,
            base,
        )

    def _record(
        self,
        cid: int,
        c: _Campaign,
        i: int,
        status: Status,
        severity: Severity,
        message: str,
        clients: list[str],
        extra: dict[str, Any],
        seqs: I64,
        ts: I64,
        event_ids: npt.NDArray[Any],
        base: int,
    ) -> AlertDecision:
        """Campaign ``cid``'s ``evasion_probing`` record at row ``i``, listing ``clients`` (evidence: its counts,
        then ``extra``)."""
        return AlertDecision(
            kind="evasion_probing",
            status=status,
            severity=severity,
            columns=(),
            statistic="campaign_clients",
            value=float(len(c.members)),
            threshold=float(self.campaign_clients),
            p_value=None,
            event_index=int(seqs[i]) - base,
            pane=int(seqs[i]),
            incident=int(c.incident),
            window_start_ts=int(ts[i]),
            window_end_ts=int(ts[i]),
            window_events=int(c.links),
            window_start_seq=int(c.incident),
            message=message,
            evidence={
                "campaign": f"c{cid}",
                "clients": self._names(clients),
                "n_clients": len(c.members),
                "boundary_hits": int(c.boundary_hits),
                "probe_hits": int(c.probe_hits),
                "walk_steps": int(c.walk_links),
                **extra,
                "event_id": str(event_ids[i]),
                "event_seq": int(seqs[i]),
            },
            client_id=None,
        )

    def _campaigns(
        self,
        hits: tuple[I64, I64, I64, I64],
        probes: tuple[I64, I64, I64, I64, I64],
        slots: I64,
        z: npt.NDArray[np.float32],
        pred: I64,
        n_seen: I64,
        seqs: I64,
        ts: I64,
        clock: I64,
        event_ids: npt.NDArray[Any],
        layout: _Layout,
        base: int,
    ) -> list[AlertDecision]:
        out: list[AlertDecision] = []
        hi, h_slot, h_uid, h_pred = hits
        if len(hi) == 0 and len(probes[0]) == 0:
            self._quiet(len(seqs), clock, seqs, ts, event_ids, base, out)
            return out
        # Per-client state is read as it was at the hit's row, not after the batch (``_process`` already ran):
        # the alerts must not depend on where the batch boundaries fall. ``key`` orders events by (slot, row).
        n = len(slots)
        key = layout.key
        p_i, p_s, p_o, p_seq, p_qs, p_qo, p_wk, p_2nd = self._probe_edges(probes, slots, n_seen, key)
        # Only three kinds of hit change state: flips (boundary evidence), linking probe hits, and any hit touching
        # a campaign member. Members are members at the batch start or clients of this batch's flips and linking
        # probe hits, so every other hit (most of them: popular inputs resent by many clients) is dropped here.
        h_s = slots[hi]
        h_o = np.where(self._uid[h_slot] == h_uid, h_slot, -1)  # -1: evicted since
        flip_h = (h_pred != pred[hi]) & self._flips
        # slots of this batch's flips and links, as a mask over the slots in use here (all below the largest)
        top = max(int(h_s.max(initial=0)), int(h_o.max(initial=0)), int(p_s.max(initial=0)), int(p_o.max(initial=0)))
        touched = self._scratch.get("camp.touched", (top + 1,), bool)
        touched[...] = False
        touched[h_s[flip_h]] = True
        touched[h_o[flip_h & (h_o >= 0)]] = True
        touched[p_s] = True
        touched[p_o] = True
        o0 = np.maximum(h_o, 0)
        mem_s = (self._campaign[h_s] >= 0) | touched[h_s]
        mem_o = (h_o >= 0) & ((self._campaign[o0] >= 0) | touched[o0])
        sel = np.flatnonzero(flip_h | mem_s | mem_o)
        o_sel = np.maximum(h_o[sel], 0)
        # the matched client's count at the row: after the batch, minus its events from this row on
        cnt_o = self._count[o_sel] - (np.searchsorted(key, o_sel * n + n) - np.searchsorted(key, o_sel * n + hi[sel]))
        # the boundary-only prefix stops at the first linking probe hit (index hits of its row come before it)
        limit = int(np.searchsorted(hi[sel], p_i[0], side="right")) if len(p_i) else len(sel)
        sel = sel[self._count_boundary_hits(sel, hi, h_s, h_o, flip_h, n_seen, limit) :]
        cnt_o = cnt_o[len(cnt_o) - len(sel) :]
        # index hits and linking probe hits in stream order (an index hit before a probe hit of the same row)
        steps = sorted(
            [(r, 0, j) for j, r in enumerate(hi[sel].tolist())] + [(r, 1, j) for j, r in enumerate(p_i.tolist())]
        )
        hs_, ho_, hp_, cn_ = h_s[sel].tolist(), h_o[sel].tolist(), h_pred[sel].tolist(), cnt_o.tolist()
        ps_, po_, pseq_, pqs_, pqo_ = p_s.tolist(), p_o.tolist(), p_seq.tolist(), p_qs.tolist(), p_qo.tolist()
        pwk_, p2_ = p_wk.tolist(), p_2nd.tolist()
        for i, kind, j in steps:
            self._quiet(i, clock, seqs, ts, event_ids, base, out)
            rec: int | None
            if kind == 1:
                if pwk_[j] and not (pqs_[j] or pqo_[j]) and self._unlinked(ps_[j]) and self._unlinked(po_[j]):
                    continue  # a first walk link between two new clients: counted, no campaign yet (see _probe_link)
                rec = self._probe_link(
                    i, ps_[j], po_[j], pseq_[j], pqs_[j], pqo_[j], pwk_[j], p2_[j], z, seqs, key, layout
                )
            else:
                rec = self._boundary_hit(i, hs_[j], ho_[j], hp_[j], cn_[j], z, pred, n_seen, key, layout)
            if rec is not None:
                self._camps[rec].last_ts = int(clock[i])
                report = self._report(rec, i, seqs, ts, event_ids, base)
                if report is not None:
                    out.append(report)
        self._quiet(len(seqs), clock, seqs, ts, event_ids, base, out)
        return out

    def _quiet(
        self,
        until: int,
        clock: I64,
        seqs: I64,
        ts: I64,
        event_ids: npt.NDArray[Any],
        base: int,
        out: list[AlertDecision],
    ) -> None:
        """Forget the campaigns without a hit for ``campaign_quiet_s`` of stream time by row ``until`` (not
        included), least recently active first (the order of ``_camps``); a reported one gets its ``resolved``
        record at the first event past that time, listing the clients its records named. A later hit of its
        accounts starts another campaign."""
        quiet = round(self.campaign_quiet_s * 1000)
        while self._camps:
            cid = next(iter(self._camps))
            c = self._camps[cid]
            r = int(np.searchsorted(clock, c.last_ts + quiet, side="right"))
            if r >= until:
                return
            self._forget(cid)
            if c.reported:
                message = (
                    f"campaign c{cid} ended: no hit for {self.campaign_quiet_s:g} s ({len(c.members)} clients, "
                    f"{c.links} hits)"
                )
                out.append(
                    self._record(
                        cid, c, r, "resolved", "info", message, c.members[: c.reported], {}, seqs, ts, event_ids, base
                    )
                )

    def _unlinked(self, slot: int) -> bool:
        """Whether a client is in no campaign and linked to none."""
        return bool(self._campaign[slot] < 0 and self._camp_link[slot] < 0)

    def _probe_link(
        self,
        i: int,
        s: int,
        o: int,
        o_seq: int,
        s_qualifies: bool,
        o_qualifies: bool,
        walk: bool,
        second: bool,
        z: npt.NDArray[np.float32],
        seqs: I64,
        key: I64,
        layout: _Layout,
    ) -> int:
        """A linking probe hit (see :meth:`_probe_edges`) at row ``i`` between the querying client ``s`` and the
        matched client ``o``: each becomes a member of the campaign if it qualifies, and ``s`` also if it continues
        the campaign's chain: the query it matched is no older than the campaign's last linking query, and it was a
        probe hit itself (its client qualifies): the next step of one search, e.g. from an account sending its only
        query. (A benign client sending, later, the input a search started from matches an older step, or a step
        that matched nothing: an exact re-query, the start.) Otherwise a client is only linked to the campaign (it
        joins once a later step matches its query). A walk step that is its client's second query, the first one a
        walk step too, confirms the campaign (an account sending nothing but such steps). A walk link between two
        clients that neither qualify nor belong or link to a campaign does not come here: in traffic rich in new
        ood inputs (a noisy population) most walk links are such chance pairs, and each one would start a campaign.
        Returns the campaign."""
        cs_, co_ = int(self._campaign[s]), int(self._campaign[o])
        if cs_ != co_ and cs_ in self._camps and co_ in self._camps:
            self._merge(cs_, co_)
        cid = self._join(s, o, i, z, key, layout)
        c = self._camps[cid] = self._camps.pop(cid)  # (now the most recently active)
        chain = o_qualifies and c.last_link >= 0 and o_seq >= c.last_link
        c.ring[c.links % _CAMP_RING] = z[i]
        c.links += 1
        if walk:
            c.walk_links += 1
            c.confirmed += int(second)
        else:
            c.probe_hits += 1
        c.last_link = max(c.last_link, int(seqs[i]))
        for slot, listed in ((o, o_qualifies), (s, s_qualifies or chain)):
            if listed:
                self._enlist(cid, slot)
            else:
                self._camp_link[slot] = cid
        return cid

    def _boundary_hit(
        self,
        i: int,
        s: int,
        o: int,
        other_pred: int,
        cnt_oi: int,
        z: npt.NDArray[np.float32],
        pred: I64,
        n_seen: I64,
        key: I64,
        layout: _Layout,
    ) -> int | None:
        """A cross-client index hit at row ``i`` (client ``s`` matched client ``o``'s query): campaign links, and
        boundary evidence when the class flips. Returns the campaign it counted for, if any."""
        if o >= 0:
            # Remember which campaign a near-duplicate partner belongs to: the accounts of one split
            # search keep matching each other's queries, flip or not, so a new boundary pair among them
            # extends that campaign instead of opening another one.
            if self._campaign[o] >= 0:
                self._camp_link[s] = self._campaign[o]
            if self._campaign[s] >= 0:
                self._camp_link[o] = self._campaign[s]
            # two campaigns whose members send near-duplicates of each other's queries are one search
            cs_, co_ = int(self._campaign[s]), int(self._campaign[o])
            if cs_ != co_ and cs_ in self._camps and co_ in self._camps:
                self._merge(cs_, co_)
        # A flip between near-duplicates from different clients: a boundary being probed. (A popular
        # borderline input resent by many clients has a low margin but the same class: not a search. Nor is a flip
        # where benign near-duplicates flip too, see AdversarialArtifact.p_flip.)
        if other_pred == pred[i] or not self._flips:
            return None
        self._camp_hits[s] += 1
        if o >= 0:
            self._camp_hits[o] += 1
        # Members must be mostly boundary hits: a benign client that once sent the input an attack
        # started from (a flip against the attack's queries) stays out. And at least two: one flip is
        # what any client gets who sends, with a little noise, a borderline input many others send too.
        if self._camp_hits[s] < max(2.0, self.campaign_share * n_seen[i]):
            return None
        # The same share rule for the matched client: a heavy benign client whose stored inputs an attack
        # walks past collects a few hits, but they are a tiny share of its queries.
        if o >= 0 and (self._camp_hits[o] < 2 or self._camp_hits[o] < self.campaign_share * cnt_oi):
            o = -1
        cid = self._join(s, o, i, z, key, layout)
        c = self._camps[cid] = self._camps.pop(cid)  # (now the most recently active)
        c.ring[c.links % _CAMP_RING] = z[i]
        c.links += 1
        c.boundary_hits += 1
        for slot in (s, o):
            if slot >= 0:
                self._enlist(cid, slot)
        return cid
