"""Label maps: NRRD / NIfTI label volumes and Slicer segmentations (``.seg.nrrd``), region names.

    >>> label_map = read_labels("labels.nrrd", reference_shape=image.signal.shape[1:],
    ...                         reference_ijk_to_ras=image.ijk_to_ras)
    >>> label_map.labels, label_map.names, label_map.warnings

Labels are integer arrays [k, j, i] (0 background) with Slicer's ``ijk_to_ras`` (RAS mm, see
:mod:`IronMapping.volume_io`); `resample_labels` puts them on the image grid (nearest
neighbour).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import GeometryError, InputError
from .fileio import first_line as _first_line
from .volume_io import (_check_readable, ijk_to_ras_from_sitk, image_from_array, read_volume,
                        same_grid)


@dataclass
class LabelMap:
    """Integer regions on a voxel grid.

    Attributes
    ----------
    labels : int ndarray, shape (k, j, i)
        0 is background.
    ijk_to_ras : ndarray, shape (4, 4)
        Slicer geometry of ``labels`` (RAS mm).
    names : dict of int to str
        Label value to region name.
    source : str
        Where it came from (file path, "phantom", ...).
    warnings : list of str
        Things the user should know (overlapping segments, resampling, ...).
    terminology : dict of int to str
        Label value to Slicer TerminologyEntry tag from a .seg.nrrd (organ codes).
    """

    labels: np.ndarray
    ijk_to_ras: np.ndarray
    names: dict[int, str] = field(default_factory=dict)
    source: str = ""
    warnings: list[str] = field(default_factory=list)
    terminology: dict[int, str] = field(default_factory=dict)


_SEGMENT_KEY = re.compile(r"^Segment(\d+)_(\w+)$")


def is_segmentation_file(path) -> bool:
    """Whether a path is a Slicer segmentation (``.seg.nrrd``).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    bool
    """
    return Path(path).name.lower().endswith(".seg.nrrd")


def read_label_names(path) -> dict[int, str]:
    """Label value -> name from a CSV (``value,name``) or a Slicer colour table.

    Accepted: a two-column CSV with or without a header row; Slicer's CSV colour table
    (columns ``LabelValue``, ``Name``); Slicer's ``.ctbl`` / ``.txt`` colour table
    (``value name r g b a`` per line, ``#`` comments, underscores standing for spaces).
    Value 0 (background) is dropped.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    dict of int to str

    Raises
    ------
    InputError
        When the file is missing or a line cannot be read.
    """
    path = Path(path)
    _check_readable(path, "Label-name file")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    suffix = path.suffix.lower()
    names: dict[int, str] = {}
    if suffix in (".ctbl", ".txt"):
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            value = _label_value(parts[0], path, n)
            if len(parts) < 2:
                raise InputError(f"{path.name} line {n}: expected 'value name r g b a', got "
                                 f"{line!r}.")
            names[value] = parts[1].replace("_", " ")
    else:
        rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
        if not rows:
            raise InputError(f"{path.name} is empty; write one 'value,name' line per label.")
        header = [c.strip().lower() for c in rows[0]]
        value_col, name_col, start = 0, 1, 0
        if "labelvalue" in header and "name" in header:  # Slicer's CSV colour table
            value_col, name_col, start = header.index("labelvalue"), header.index("name"), 1
        elif "value" in header and "name" in header:
            value_col, name_col, start = header.index("value"), header.index("name"), 1
        elif not _is_int(rows[0][0]):
            start = 1  # some other header row
        for n, row in enumerate(rows[start:], start + 1):
            if len(row) <= max(value_col, name_col):
                raise InputError(f"{path.name} line {n}: expected 'value,name', got {row!r}.")
            names[_label_value(row[value_col], path, n)] = row[name_col].strip()
    names.pop(0, None)
    if not names:
        raise InputError(f"{path.name} names no label other than 0 (background). Write one "
                         "'value,name' line per region, e.g. '1,liver'.")
    return names


def _is_int(text: str) -> bool:
    try:
        int(text.strip())
        return True
    except ValueError:
        return False


def _label_value(text: str, path: Path, line: int) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InputError(f"{path.name} line {line}: label value {text!r} is not an integer. "
                         "Each line must start with the integer label value.") from None


def read_labels(path, names_path=None, reference_shape=None, reference_ijk_to_ras=None
                ) -> LabelMap:
    """Read a label map (NRRD / NIfTI label volume or Slicer ``.seg.nrrd``).

    Names of a ``.seg.nrrd`` are its embedded segment names (``names_path`` is then ignored
    with a warning). For label volumes they come from ``names_path`` (see
    :func:`read_label_names`), else from a names file beside the label file (``<stem>.csv``,
    ``.ctbl`` or ``.txt``), else default to ``"label <value>"``.

    Parameters
    ----------
    path : str or Path
    names_path : str or Path, optional
    reference_shape : tuple of int, optional
        (k, j, i) of the image grid; with ``reference_ijk_to_ras`` the labels are resampled
        (nearest neighbour) onto that grid.
    reference_ijk_to_ras : ndarray, shape (4, 4), optional

    Returns
    -------
    LabelMap

    Raises
    ------
    InputError
        For a missing file, non-integer or negative labels.
    GeometryError
        When the labels do not overlap the reference grid.
    """
    path = Path(path)
    _check_readable(path, "Label map")
    if is_segmentation_file(path):
        label_map = _read_segmentation(path)
    else:
        volume = read_volume(path)
        array = volume.array
        if not np.issubdtype(array.dtype, np.integer):
            rounded = np.rint(array)
            if not np.array_equal(rounded[np.isfinite(array)], array[np.isfinite(array)]):
                raise InputError(
                    f"{path.name} holds non-integer values; a label map needs integer labels "
                    "(0 background, 1, 2, ... per region). Did you pass an image instead?")
            array = np.nan_to_num(rounded).astype(np.int32)
        if array.min() < 0:
            raise InputError(f"{path.name} has negative label values; use 0 for background "
                             "and positive integers for regions.")
        label_map = LabelMap(array.astype(np.int32, copy=False), volume.ijk_to_ras, {}, str(path))
    present = [int(v) for v in np.unique(label_map.labels) if v != 0]
    if names_path is not None and is_segmentation_file(path):
        label_map.warnings.append(
            f"{Path(names_path).name} was not used: {path.name} is a Slicer segmentation and "
            "its own segment names are used.")
    elif names_path is not None:
        names = read_label_names(names_path)
        label_map.names = {v: names[v] for v in present if v in names}
        missing = [v for v in present if v not in names]
        if missing:
            label_map.warnings.append(
                f"Label values {missing} have no name in {Path(names_path).name}; they are "
                "reported as 'label <value>'.")
            label_map.names.update({v: f"label {v}" for v in missing})
    elif not label_map.names:
        beside = _names_beside(path)
        names = read_label_names(beside) if beside else {}
        label_map.names = {v: names.get(v, f"label {v}") for v in present}
    if reference_shape is not None and reference_ijk_to_ras is not None:
        label_map = resample_labels(label_map, reference_shape, reference_ijk_to_ras)
    return label_map


def _names_beside(path: Path) -> Path | None:
    stem = path.name
    for ext in (".seg.nrrd", ".nii.gz", ".nrrd", ".nii", ".nhdr", ".mha"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    for suffix in (".csv", ".ctbl"):
        candidate = path.with_name(stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def _read_segmentation(path: Path) -> LabelMap:
    """Merge a Slicer ``.seg.nrrd`` (one or more layers) into one label array.

    Segments are renumbered 1..N in file order. Where segments on different layers overlap,
    the voxel goes to the later segment and a warning says how many voxels were affected.
    """
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"Cannot read {path.name} as a Slicer segmentation "
                         f"({_first_line(exc)}).") from None
    segments: dict[int, dict[str, str]] = {}
    for key in image.GetMetaDataKeys():
        m = _SEGMENT_KEY.match(key)
        if m:
            segments.setdefault(int(m.group(1)), {})[m.group(2)] = image.GetMetaData(key)
    if not segments:
        raise InputError(f"{path.name} has no Segment0_* header keys, so it is not a Slicer "
                         "segmentation. Save it from Slicer's Segmentations module, or pass a "
                         "plain label map with --label-names.")
    n_layers = image.GetNumberOfComponentsPerPixel()
    if image.GetDimension() == 4:  # obsolete 4-D spatial form: one 3-D volume per layer
        layer_images = [image[:, :, :, n] for n in range(image.GetSize()[3])]
        data = np.stack([sitk.GetArrayFromImage(im) for im in layer_images], axis=-1)
        geometry_image = layer_images[0]
    else:
        data = sitk.GetArrayFromImage(image)
        if n_layers == 1:
            data = data[..., np.newaxis]
        geometry_image = image
    ijk_to_ras = ijk_to_ras_from_sitk(geometry_image)
    merged = np.zeros(data.shape[:3], dtype=np.int32)
    names: dict[int, str] = {}
    terminology: dict[int, str] = {}
    warnings: list[str] = []
    for new_value, index in enumerate(sorted(segments), 1):
        seg = segments[index]
        name = seg.get("Name") or f"segment {index}"
        layer = int(seg.get("Layer", 0))
        value = int(seg.get("LabelValue", 1))
        if layer >= data.shape[-1]:
            raise InputError(f"{path.name}: segment {name!r} is on layer {layer} but the file "
                             f"has {data.shape[-1]} layer(s). Re-save it from Slicer.")
        voxels = data[..., layer] == value
        overlap = int(np.count_nonzero(voxels & (merged != 0)))
        if overlap:
            warnings.append(
                f"Segment {name!r} overlaps earlier segments in {overlap} voxels; those voxels "
                f"are counted in {name!r} only.")
        merged[voxels] = new_value
        names[new_value] = name
        entry = _terminology_entry(seg.get("Tags", ""))
        if entry:
            terminology[new_value] = entry
    return LabelMap(merged, ijk_to_ras, names, str(path), warnings, terminology)


def _terminology_entry(tags: str) -> str | None:
    """The TerminologyEntry of a segment's ``Segment<N>_Tags`` value (``key:value|...``)."""
    for item in tags.split("|"):
        key, _, value = item.partition(":")
        if key == "TerminologyEntry" and value:
            return value
    return None


def resample_labels(label_map: LabelMap, shape, ijk_to_ras) -> LabelMap:
    """A label map on another grid, nearest neighbour.

    Same grid: returned unchanged. Otherwise (cropped Slicer segmentations, other resolution)
    each target voxel takes the label at its centre; voxels outside the label map get 0.

    Parameters
    ----------
    label_map : LabelMap
    shape : tuple of int
        Target (k, j, i).
    ijk_to_ras : ndarray, shape (4, 4)
        Target geometry (RAS mm).

    Returns
    -------
    LabelMap
        With warnings for labels lost and for a change of voxel size or orientation.

    Raises
    ------
    GeometryError
        When no label overlaps the target grid.
    """
    shape = tuple(int(s) for s in shape)
    if same_grid(label_map.labels.shape, label_map.ijk_to_ras, shape, ijk_to_ras):
        return label_map
    import SimpleITK as sitk

    source = image_from_array(label_map.labels.astype(np.int32), label_map.ijk_to_ras)
    reference = image_from_array(np.zeros(shape, dtype=np.uint8), ijk_to_ras)
    resampled = sitk.Resample(source, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                              sitk.sitkInt32)
    labels = sitk.GetArrayFromImage(resampled)
    before = {int(v) for v in np.unique(label_map.labels) if v}
    after = {int(v) for v in np.unique(labels) if v}
    warnings = list(label_map.warnings)
    if before and not after:
        raise GeometryError(
            f"The label map {label_map.source or ''} does not overlap the image at all. Check "
            "that it was drawn on this series (same patient position and frame of reference).")
    if before - after:
        lost = sorted(before - after)
        warnings.append(f"Labels {[label_map.names.get(v, v) for v in lost]} fall outside the "
                        "image after resampling onto its grid and are not reported.")
    if not _is_voxel_shift(label_map.ijk_to_ras, ijk_to_ras):
        warnings.append("The label map has another voxel size or orientation than the image; it "
                        "was resampled (nearest neighbour) onto the image grid.")
    return LabelMap(labels.astype(np.int32), np.asarray(ijk_to_ras, dtype=np.float64),
                    dict(label_map.names), label_map.source, warnings,
                    dict(label_map.terminology))


def _is_voxel_shift(a, b, tol: float = 1e-3) -> bool:
    """True when grid ``a`` is grid ``b`` shifted by whole voxels (e.g. a cropped segmentation)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if not np.allclose(a[:3, :3], b[:3, :3], atol=tol * 1e-1):
        return False
    shift = np.linalg.solve(b[:3, :3], a[:3, 3] - b[:3, 3])
    return bool(np.allclose(shift, np.round(shift), atol=tol))
