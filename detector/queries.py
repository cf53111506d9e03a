"""What the adversarial detector reads from each query before it looks at any client's state.

Per event: its embedding (the baseline's projection), its raw coordinates as float16, fingerprints of
its exact values with their probe table positions, and the margin between its top two class
probabilities. All of it depends only on the event, the baseline and the configured salt, so a
decoding process can compute it (:mod:`detector.prepared`). Separate from
:mod:`detector.adversarial`, which imports scipy through the decision module, so that such a process
starts quickly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from detector.buffers import Scratch
from detector.schema import EventBatch

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_U64 = np.uint64

#: Fingerprint blocks: column ``i`` of a query goes to block ``i % FP_BLOCKS``, each block a 4-bit hash.
FP_BLOCKS = 32
#: Probe table bands: consecutive blocks, each band a salted key into its own part of the table.
PROBE_BANDS = 8
_Z_MAX = 1e4  # standardized values beyond this many reference standard deviations are clipped to it
_E_MAX = 3e4  # and embedding components to this: their differences stay within float16's range (65504)


def embed(x: F64, center: F64, scale: F64, projection: F64, scratch: Scratch | None = None) -> npt.NDArray[np.float32]:
    """Project feature rows: ``((x - center) / scale) @ projection`` with NaN at the center."""
    if scratch is None:
        z = x - center
    else:
        z = scratch.get("embed.z", np.broadcast_shapes(x.shape, center.shape), np.result_type(x, center))
        np.subtract(x, center, out=z)
    z /= scale
    np.copyto(z, 0.0, where=~np.isfinite(z))  # nan_to_num's three passes in one
    # an absurd value (1e300, passed on with an out_of_range count) stays far out, but finite in the float32 product
    # and the float16 the adversarial detector keeps: an inf there would turn its global running sums into NaN
    np.clip(z, -_Z_MAX, _Z_MAX, out=z)
    out: npt.NDArray[np.float32] = (z @ projection).astype(np.float32)
    return np.clip(out, -_E_MAX, _E_MAX, out=out)


@dataclass(frozen=True)
class QueryFeatures:
    """Per event of a batch: ``z`` ``(n, d)`` float32 embedding, ``raw16`` ``(n, c)`` float16 raw coordinates,
    ``fp`` ``(n, FP_BLOCKS // 2)`` fingerprint bytes, ``probe_pos`` ``(PROBE_BANDS, n)`` probe table positions
    and ``margin`` ``(n,)`` top-2 probability margin (NaN without two probabilities)."""

    z: npt.NDArray[np.float32]
    raw16: npt.NDArray[np.float16]
    fp: npt.NDArray[np.uint8]
    probe_pos: I64
    margin: F64

    def __len__(self) -> int:
        return len(self.margin)

    def take(self, rows: npt.NDArray[np.intp]) -> QueryFeatures:
        """The features of ``rows``."""
        return QueryFeatures(self.z[rows], self.raw16[rows], self.fp[rows], self.probe_pos[:, rows], self.margin[rows])


class QueryFeaturizer:
    """Computes :class:`QueryFeatures` of batches; picklable (its buffers are not pickled).

    The adversarial detector builds it from its baseline artifact and salt
    (:attr:`AdversarialDetector.featurizer <detector.adversarial.AdversarialDetector.featurizer>`).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> f = QueryFeaturizer(np.zeros(3), np.ones(3), rng.normal(size=(3, 2)), None,
    ...                     np.arange(1, 7, 2, dtype=np.uint64), np.ones((8, 4), dtype=np.uint64), 16)
    >>> q = f(EventBatch.from_arrays(rng.normal(size=(5, 3)), proba=np.full((5, 2), 0.5)))
    >>> q.z.shape, q.raw16.dtype.name, q.fp.shape, q.probe_pos.shape, q.margin.tolist()
    ((5, 2), 'float16', (5, 16), (8, 5), [0.0, 0.0, 0.0, 0.0, 0.0])
    """

    def __init__(
        self,
        center: F64,
        scale: F64,
        projection: F64,
        raw_cols: npt.NDArray[np.intp] | None,
        fp_mult: npt.NDArray[np.uint64],
        pb_mult: npt.NDArray[np.uint64],
        probe_bits: int,
    ) -> None:
        self.center, self.scale, self.projection = center, scale, projection
        self.raw_cols = raw_cols
        self.fp_mult = fp_mult
        self.pb_mult = pb_mult
        self.probe_bits = probe_bits
        self._scratch = Scratch()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "_scratch"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._scratch = Scratch()

    def __call__(self, batch: EventBatch) -> QueryFeatures:
        x = batch.numeric
        z = embed(x, self.center, self.scale, self.projection, self._scratch)
        # values beyond float16's range (65504) become +-inf: the structured-step test sees no change in them, the
        # fingerprint (exact bits) still does
        with np.errstate(over="ignore"):
            raw16 = (x if self.raw_cols is None else x[:, self.raw_cols]).astype(np.float16, order="C")
        fp, pos = self.fingerprint(x)
        proba = batch.proba
        if proba.shape[1] >= 2:
            top = -np.sort(-np.nan_to_num(proba, nan=-1.0), axis=1)[:, :2]
            margin = np.where(top[:, 1] >= 0, top[:, 0] - top[:, 1], np.nan)
        else:
            margin = np.full(len(x), np.nan)
        return QueryFeatures(z, raw16, fp, pos, margin)

    def fingerprint(self, x: F64) -> tuple[npt.NDArray[np.uint8], I64]:
        """Fingerprints of raw feature rows: the exact float64 bits of column ``i`` go to block ``i % FP_BLOCKS``,
        each block keeps a 4-bit hash, two blocks a byte. Two queries differ in at least the blocks whose
        fingerprints differ (a changed block keeps its hash with probability 1/16); any change counts, however
        small (a step of 1e-4 that float16 values cannot show).

        Also each row's probe table positions, ``(PROBE_BANDS, n)``: band ``b`` (blocks ``4b .. 4b + 3``) hashed
        from the blocks' full 64-bit hashes into part ``b`` of the table. Queries that agree on a band's blocks
        share its position."""
        n, f = x.shape
        bits = np.ascontiguousarray(x).view(np.uint64)
        width = -(-f // FP_BLOCKS) * FP_BLOCKS
        h = self._scratch.get("fp.h", (n, width), np.uint64)
        h[:, f:] = 0
        # a sum of odd multiples modulo 2**64: a change of one value always changes its block's sum
        np.multiply(bits, self.fp_mult, out=h[:, :f])
        blocks = h[:, :FP_BLOCKS].copy()
        for c in range(FP_BLOCKS, width, FP_BLOCKS):
            blocks += h[:, c : c + FP_BLOCKS]
        blocks ^= blocks >> _U64(31)
        blocks *= _U64(0xBF58476D1CE4E5B9)
        nib = (blocks >> _U64(60)).astype(np.uint8)
        out: npt.NDArray[np.uint8] = nib[:, 0::2] | (nib[:, 1::2] << np.uint8(4))
        # uint64 products and sums wrap modulo 2**64, so the summation order cannot change the key
        key = np.einsum("nbk,bk->bn", blocks.reshape(n, PROBE_BANDS, -1), self.pb_mult)
        key ^= key >> _U64(29)
        key *= _U64(0xBF58476D1CE4E5B9)
        key ^= key >> _U64(32)
        pos = (key >> _U64(64 - self.probe_bits)).astype(np.int64)
        pos += (np.arange(PROBE_BANDS, dtype=np.int64) << self.probe_bits)[:, None]
        return out, pos
