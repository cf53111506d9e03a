"""Fit the :class:`~detector.adversarial.AdversarialArtifact` of a baseline from its reference events.

The lead's baseline build calls :func:`fit_adversarial` with the reference batch (feature rows, class
probabilities, and — when the reference traffic carries them — client ids and event times). The
artifact converts to arrays + metadata with ``to_arrays()`` for the baseline store; a new model needs no
hand tuning because every threshold is a quantile of its own reference traffic.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from detector.adversarial import AdversarialArtifact
from detector.schema import EventBatch

__all__ = ["fit_adversarial", "fit_adversarial_from_batch"]

log = logging.getLogger(__name__)


def fit_adversarial(
    features: npt.ArrayLike,
    proba: npt.ArrayLike,
    *,
    client_id: npt.ArrayLike | None = None,
    ts: npt.ArrayLike | None = None,
    seed: int = 0,
    **params: Any,
) -> AdversarialArtifact:
    """Calibrate on reference rows ``features`` (n, F) and their class probabilities ``proba`` (n, K).

    ``client_id`` / ``ts`` (ms) are the clients and times of a benign reference traffic log (it may be longer
    than the feature rows); without them the per-client rate ceiling is ``default_rate_max``. ``params`` go to
    :meth:`AdversarialArtifact.fit` (``n_components``, ``history``, ``k``, ``quantile``, ``p_ood`` ...).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> art = fit_adversarial(rng.normal(size=(300, 4)), rng.dirichlet(np.ones(3), 300))
    >>> sorted(art.to_arrays()[0])
    ['center', 'projection', 'scale']
    """
    return AdversarialArtifact.fit(features, proba, client_id=client_id, ts=ts, seed=seed, **params)


def fit_adversarial_from_batch(batch: EventBatch, *, seed: int = 0, **params: Any) -> AdversarialArtifact:
    """:func:`fit_adversarial` from a decoded reference batch (rows without probabilities are dropped; the
    batch's client ids and times calibrate the rate ceiling, and the clients' own query sequences, when every
    event has a client id)."""
    if batch.proba.shape[1] < 2:
        raise ValueError("the adversarial artifact needs class probabilities in the reference events")
    keep = ~np.isnan(batch.proba).any(axis=1)
    has_clients = bool(len(batch)) and all(c is not None for c in batch.client_id)
    if not has_clients:
        log.warning(
            "some reference events have no client_id: the adversarial calibration sees the rows in random order "
            "only, so clients that query similar inputs one after another (sessions, sensors) may raise "
            "model_extraction and evasion_probing alerts; give every reference event its client_id"
        )
    return fit_adversarial(
        batch.numeric[keep],
        batch.proba[keep],
        client_id=batch.client_id[keep] if has_clients else None,
        ts=batch.ts[keep] if has_clients else None,
        seed=seed,
        **params,
    )
