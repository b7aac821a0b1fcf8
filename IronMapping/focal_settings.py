"""Settings of the focal analysis (`FocalOptions`) and the two kinds of focal finding.

A finding is iron-sparing (`SPARING`: R2* below the organ's background) or iron-dense
(`DENSE`: above it); :mod:`IronMapping.focal` describes the analysis these settings steer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

FOCAL_ORGANS = ("liver", "spleen", "kidney", "pancreas")
SPARING = "iron-sparing"
DENSE = "iron-dense"
KINDS = (SPARING, DENSE)


@dataclass
class FocalOptions:
    """Settings of the focal analysis (all user-settable).

    Attributes
    ----------
    min_volume_ml : float
        Smallest area reported in mL, default 0.75: a focus of 1 mL measured up to 25 % small
        is still reported; raise it (e.g. 3) for fewer, larger findings.
    min_voxels : int
        Smallest area in voxels, whatever the voxel size (and when it is unknown); the minimum
        in small organs with coarse voxels.
    seed_z, grow_z : float
        Hysteresis thresholds on the smoothed z (standard deviations).
    cluster_z : float
        The area's median must differ from the background by this many standard errors.
    coverage_factor : float
        And by more than this x the combined per-voxel uncertainty (the rule of the lesion
        comparison, IronMapping.regions.compare_lesion).
    erode_voxels : int
        In-plane erosion of the organ edge (partial volume).
    max_dark_fraction : float
        Voxels too dark or too fast-decaying to fit join dense foci only while they are at most
        this share of the organ (scattered, they are noise).
    organs : tuple of str
        Organs analysed.
    """

    min_volume_ml: float = 0.75
    min_voxels: int = 10
    seed_z: float = 4.0
    grow_z: float = 2.0
    cluster_z: float = 5.0
    coverage_factor: float = 2.0
    erode_voxels: int = 1
    max_dark_fraction: float = 0.02
    organs: tuple = FOCAL_ORGANS

    def __post_init__(self):
        if not (self.min_volume_ml >= 0 and self.min_voxels >= 1):
            raise InputError("The minimum focal-finding size must be >= 0 mL and >= 1 voxel; got "
                             f"{self.min_volume_ml} mL, {self.min_voxels} voxels.")
        if not (self.seed_z >= self.grow_z > 0):
            raise InputError(f"Hysteresis thresholds need seed_z >= grow_z > 0; got {self.seed_z}, "
                             f"{self.grow_z}.")
        self.organs = tuple(self.organs)

    def min_size_voxels(self, voxel_volume_ml: float | None) -> int:
        """Smallest area in voxels at a voxel size.

        Parameters
        ----------
        voxel_volume_ml : float or None
            mL per voxel; None gives ``min_voxels``.

        Returns
        -------
        int
            The larger of ``min_voxels`` and ``min_volume_ml`` in voxels.
        """
        if voxel_volume_ml:
            return max(int(self.min_voxels), int(np.ceil(self.min_volume_ml / voxel_volume_ml - 1e-9)))
        return int(self.min_voxels)


def focal_options(options) -> FocalOptions:
    """A FocalOptions from None, a FocalOptions or a dict of its fields.

    Parameters
    ----------
    options : None, FocalOptions or dict

    Returns
    -------
    FocalOptions

    Raises
    ------
    InputError
        For unknown fields, another type, or invalid values.
    """
    if options is None:
        return FocalOptions()
    if isinstance(options, FocalOptions):
        return options
    if isinstance(options, dict):
        unknown = set(options) - set(FocalOptions.__dataclass_fields__)
        if unknown:
            raise InputError(f"Unknown focal-finding option(s) {sorted(unknown)}; use "
                             f"{sorted(FocalOptions.__dataclass_fields__)}.")
        return FocalOptions(**options)
    raise InputError("focal options must be None, a dict or an IronMapping.focal.FocalOptions.")

