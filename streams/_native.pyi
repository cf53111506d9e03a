"""Type stubs of the C extension ``streams._native`` (``streams/_native.c``)."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

class Scanner:
    def __init__(
        self,
        model_id: bytes,
        numeric: Sequence[bytes],
        categorical: Sequence[bytes],
        classes: Sequence[bytes],
        max_bytes: int,
    ) -> None: ...
    def scan(
        self,
        values: list[Any],
        start: int,
        x: npt.NDArray[np.float64],
        proba: npt.NDArray[np.float64],
    ) -> tuple[int, list[str], list[Any], list[str | None], list[Any], list[Any], list[list[Any]]]: ...

def parse_float(token: bytes) -> float | None: ...
