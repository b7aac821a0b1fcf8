"""The multi-echo image that every reader produces and every fit consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import EchoTimeError, InputError


@dataclass
class MultiEchoImage:
    """A magnitude multi-echo series on one voxel grid.

    Attributes
    ----------
    signal : float32 array, shape (n_echoes, k, j, i)
        Magnitude per echo, in Slicer's KJI array order (slice, row, column).
    echo_times_ms : float64 array, shape (n_echoes,)
        Strictly increasing echo times in milliseconds.
    ijk_to_ras : float64 array, shape (4, 4)
        Voxel index (i, j, k) to RAS millimetres, Slicer's convention.
    quantity : str
        "T2*" for gradient echo, "T2" for spin echo series.
    field_strength_t : float or None
        Main field in tesla, None when unknown.
    metadata : dict
        Free-form provenance (manufacturer, series description, source files, coils, ...).
    """

    signal: np.ndarray
    echo_times_ms: np.ndarray
    ijk_to_ras: np.ndarray = field(default_factory=lambda: np.eye(4))
    quantity: str = "T2*"
    field_strength_t: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.signal = np.asarray(self.signal, dtype=np.float32)
        self.echo_times_ms = np.asarray(self.echo_times_ms, dtype=np.float64).ravel()
        self.ijk_to_ras = np.asarray(self.ijk_to_ras, dtype=np.float64)
        if self.signal.ndim != 4:
            raise InputError(
                f"A multi-echo image needs a 4-D signal array [echo, k, j, i]; got shape "
                f"{self.signal.shape}. Stack the echoes along the first axis.")
        if self.echo_times_ms.size != self.signal.shape[0]:
            raise EchoTimeError(
                f"{self.signal.shape[0]} echoes but {self.echo_times_ms.size} echo times were "
                "given. Give exactly one echo time (ms) per echo.")
        if self.ijk_to_ras.shape != (4, 4):
            raise InputError(f"ijk_to_ras must be a 4x4 matrix; got shape {self.ijk_to_ras.shape}.")
        if self.quantity not in ("T2*", "T2"):
            raise InputError(f"quantity must be 'T2*' or 'T2', not {self.quantity!r}.")

    @property
    def n_echoes(self) -> int:
        """Number of echoes."""
        return int(self.signal.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (k, j, i)."""
        return tuple(self.signal.shape[1:])

    @property
    def spacing_mm(self) -> np.ndarray:
        """Voxel size along i, j, k in millimetres."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def voxel_volume_ml(self) -> float:
        """Voxel volume in ml."""
        return float(abs(np.linalg.det(self.ijk_to_ras[:3, :3])) / 1000.0)
