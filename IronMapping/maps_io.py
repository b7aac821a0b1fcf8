"""Map files of a fit: which maps, their file names, header and sidecar content, writing them.

Every map gets its units and method in the file header (NRRD keys ``IronMapping.*``) and in a
JSON sidecar beside it (``<name>.json``), for NIfTI whose header has no room for them. Voxels
that were not fitted are NaN in both formats, but ITK's NIfTI reader (so also Slicer) shows NaN
as 0: read the ``status`` map to tell them apart.

The file code is split by concern; every name stays importable from here:

- :mod:`IronMapping.volume_io`: 3-D volume files with Slicer's geometry (the geometry
  convention, `read_volume`, `write_volume`, `sitk_geometry`, ...);
- :mod:`IronMapping.label_maps`: label maps and Slicer segmentations (`read_labels`,
  `read_label_names`, `resample_labels`, `LabelMap`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import __version__, RESEARCH_USE_STATEMENT
from .errors import InputError
from .fileio import output_failure
from .label_maps import (LabelMap, is_segmentation_file, read_label_names, read_labels,
                         resample_labels)
from .quantities import MAP_BY_KEY, MAPS, map_arrays
from .volume_io import (Volume, ijk_to_ras_from_sitk, image_from_array, read_volume, same_grid,
                        sidecar_path, sitk_geometry, write_volume)

__all__ = [
    # map files (this module)
    "MAP_SPECS", "FORMATS", "SPIN_ECHO_FILE_STEMS", "map_file_stem", "maps_of_fit",
    "output_path", "map_metadata", "write_maps",
    # volume_io
    "sitk_geometry", "ijk_to_ras_from_sitk", "image_from_array", "same_grid", "Volume",
    "read_volume", "sidecar_path", "write_volume",
    # label_maps
    "LabelMap", "is_segmentation_file", "read_label_names", "read_labels", "resample_labels",
    # fileio, imported from here by cli and pipeline
    "output_failure",
]


#: What each map file holds: name -> (quantity, unit, dtype, description), from
#: :data:`IronMapping.quantities.MAPS`.
MAP_SPECS: dict[str, tuple[str, str, str, str]] = {
    m.key: (m.quantity, m.unit, m.dtype, m.description) for m in MAPS if m.files}

FORMATS = {"nrrd": ".nrrd", "nifti": ".nii.gz"}
#: File names of the rate/time maps of spin-echo data: the file says what it holds (R2, T2),
#: while the keys stay "r2star"/"t2star" for scripts.
SPIN_ECHO_FILE_STEMS = {m.key: m.spin_echo_stem for m in MAPS if m.spin_echo_stem}


def map_file_stem(name: str, quantity: str = "T2*") -> str:
    """File name (without extension) of a map: ``r2``/``t2``/``r2_sd`` for spin echo.

    Parameters
    ----------
    name : str
        Map key, e.g. "r2star".
    quantity : str
        "T2*" or "T2" (spin echo).

    Returns
    -------
    str
    """
    return MAP_BY_KEY[name].file_stem(quantity) if name in MAP_BY_KEY else name


def maps_of_fit(fit) -> dict[str, np.ndarray]:
    """Every map of a fit that is written to files (see :data:`IronMapping.quantities.MAPS`).

    LIC is computed from the regions and added later.

    Parameters
    ----------
    fit : FitResult

    Returns
    -------
    dict of str to ndarray, shape (k, j, i)
    """
    return map_arrays(fit, "files")


def output_path(out_dir, name: str, fmt: str = "nrrd") -> Path:
    """Where a map goes in an output folder.

    Parameters
    ----------
    out_dir : str or Path
    name : str
        File stem.
    fmt : str
        "nrrd" or "nifti" (``.nii.gz``).

    Returns
    -------
    Path

    Raises
    ------
    InputError
        For an unknown format.
    """
    if fmt not in FORMATS:
        raise InputError(f"Unknown map format {fmt!r}; choose one of {sorted(FORMATS)}.")
    return Path(out_dir) / f"{name}{FORMATS[fmt]}"


def _status_codes() -> dict[str, str]:
    """Status code -> sentence, from the engine's Status enum (empty if unavailable)."""
    try:
        from .relaxometry import Status
    except ImportError:  # the engine is optional for reading/writing plain maps
        return {}
    codes = {}
    for member in Status:
        try:
            codes[str(int(member))] = f"{member.name}: {Status.describe(int(member))}"
        except Exception:  # describe() is a convenience; the name alone still documents it
            codes[str(int(member))] = member.name
    return codes


def map_metadata(name: str, provenance: Mapping[str, Any] | None = None,
                 quantity_override: str | None = None, extra: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """Header / sidecar content for one map (see :data:`MAP_SPECS`).

    Parameters
    ----------
    name : str
        Map key.
    provenance : dict, optional
        The fit's provenance (method, echo_times_ms, ...), stored whole.
    quantity_override : str, optional
        "T2" for spin echo (names the map R2/T2).
    extra : dict, optional
        Further entries (e.g. the LIC calibration).

    Returns
    -------
    dict
        map, quantity, unit, description, method, echo_times_ms, software, research_use,
        status_codes (status map only), the extra entries, provenance.
    """
    spec = MAP_BY_KEY[name]
    quantity, unit = spec.quantity_for(quantity_override or "T2*"), spec.unit
    description = spec.description_for(quantity_override or "T2*")
    prov = dict(provenance or {})
    meta: dict[str, Any] = {
        "map": name,
        "quantity": quantity,
        "unit": unit,
        "description": description,
        "method": prov.get("method", ""),
        "echo_times_ms": prov.get("echo_times_ms"),
        "software": f"IronMapping {__version__}",
        "research_use": RESEARCH_USE_STATEMENT,
    }
    if name == "status":
        meta["status_codes"] = _status_codes()
    if extra:
        meta.update(extra)
    meta["provenance"] = prov
    if isinstance(meta["echo_times_ms"], (list, tuple, np.ndarray)):
        meta["echo_times_ms"] = [float(t) for t in meta["echo_times_ms"]]
    return meta


def write_maps(out_dir, maps: Mapping[str, np.ndarray], ijk_to_ras, fmt: str = "nrrd",
               provenance: Mapping[str, Any] | None = None, quantity: str = "T2*",
               extra: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Path]:
    """Write each map to an output folder.

    Parameters
    ----------
    out_dir : str or Path
    maps : mapping of str to ndarray, shape (k, j, i)
        Names must be keys of :data:`MAP_SPECS`.
    ijk_to_ras : ndarray, shape (4, 4)
        Voxel index to RAS mm.
    fmt : str
        "nrrd" or "nifti".
    provenance : dict, optional
        The fit's; goes into every sidecar.
    quantity : str
        "T2*", or "T2" for spin echo: the R2/T2 maps are then written as ``r2``, ``t2`` and
        ``r2_sd`` (the returned keys stay the same).
    extra : mapping of str to dict, optional
        Per-map sidecar entries (e.g. the LIC calibration and its source).

    Returns
    -------
    dict of str to Path

    Raises
    ------
    InputError
        For an unknown map name or format.
    """
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    for name, array in maps.items():
        if name not in MAP_SPECS:
            raise InputError(f"Unknown map name {name!r}; known maps: {sorted(MAP_SPECS)}.")
        dtype = MAP_SPECS[name][2]
        meta = map_metadata(name, provenance, quantity, (extra or {}).get(name))
        path = output_path(out_dir, map_file_stem(name, quantity), fmt)
        write_volume(path, np.asarray(array, dtype=dtype), ijk_to_ras, meta)
        written[name] = path
    return written

