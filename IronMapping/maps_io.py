"""Map and label-map files: NRRD / NIfTI through SimpleITK, with Slicer's geometry.

Geometry convention
-------------------
IronMapping keeps Slicer's ``ijk_to_ras`` 4x4 matrix: voxel index (i, j, k) to RAS millimetres,
arrays in KJI order ``[k, j, i]``. ITK (and so every file written here) uses LPS physical space:
``LPS = diag(-1, -1, 1) @ RAS``, ``point = origin + direction @ (spacing * (i, j, k))``, and
``sitk.GetArrayFromImage`` returns the same KJI order. The helpers below convert exactly.

NRRD keeps the geometry to double precision; NIfTI stores it in float32 (its format), so a NIfTI
round trip agrees to about 1e-5 mm. Every map gets its units and method in the file header
(NRRD keys ``IronMapping.*``) and in a JSON sidecar beside it (``<name>.json``), for NIfTI
whose header has no room for them. Voxels that were not fitted are NaN in both formats, but
ITK's NIfTI reader (so also Slicer) shows NaN as 0: read the ``status`` map to tell them apart.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import __version__, RESEARCH_USE_STATEMENT
from .errors import GeometryError, InputError
from .io.geometry import LPS_TO_RAS, sitk_ijk_to_ras
from .quantities import MAP_BY_KEY, MAPS, map_arrays
from .fileio import first_line as _first_line, output_failure, replace_atomically, write_json


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


# --------------------------------------------------------------------------- geometry

def sitk_geometry(ijk_to_ras) -> tuple[tuple, tuple, tuple]:
    """Split a Slicer ``ijk_to_ras`` into ITK origin, spacing and direction in LPS.

    Parameters
    ----------
    ijk_to_ras : ndarray, shape (4, 4)
        Voxel index (i, j, k) to RAS mm.

    Returns
    -------
    origin : tuple of 3 float
        LPS mm.
    spacing : tuple of 3 float
        mm along i, j, k.
    direction : tuple of 9 float
        The row-major flattened 3x3 matrix SimpleITK expects.

    Raises
    ------
    GeometryError
        For a non-finite or non-4x4 matrix, or degenerate voxel axes.
    """
    m = np.asarray(ijk_to_ras, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise GeometryError(
            f"ijk_to_ras must be a finite 4x4 matrix; got {np.shape(m)}. Read the image with "
            "IronMapping's readers so its geometry is set.")
    lps = LPS_TO_RAS @ m  # the flip is its own inverse: RAS to LPS
    columns = lps[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0) or abs(np.linalg.det(columns)) < 1e-12 * np.prod(spacing):
        raise GeometryError(
            f"The voxel axes of ijk_to_ras are degenerate (spacing {spacing.tolist()} mm). "
            "Check the image geometry; every voxel axis needs a non-zero size and direction.")
    direction = columns / spacing
    return tuple(lps[:3, 3].tolist()), tuple(spacing.tolist()), tuple(direction.ravel().tolist())


def ijk_to_ras_from_sitk(image) -> np.ndarray:
    """The Slicer ``ijk_to_ras`` of a 3-D SimpleITK image.

    Parameters
    ----------
    image : SimpleITK.Image
        3-D.

    Returns
    -------
    ndarray, shape (4, 4)
        Voxel index to RAS mm.

    Raises
    ------
    GeometryError
        When the image is not 3-D.
    """
    if image.GetDimension() != 3:
        raise GeometryError(f"Expected a 3-D image, got {image.GetDimension()}-D.")
    return sitk_ijk_to_ras(image)


def image_from_array(array, ijk_to_ras):
    """A SimpleITK image of an array placed by ``ijk_to_ras``.

    Parameters
    ----------
    array : ndarray, shape (k, j, i)
        Booleans are written as uint8.
    ijk_to_ras : ndarray, shape (4, 4)
        Voxel index to RAS mm.

    Returns
    -------
    SimpleITK.Image

    Raises
    ------
    InputError
        When the array is not 3-D.
    GeometryError
        As `sitk_geometry`.
    """
    import SimpleITK as sitk

    array = np.asarray(array)
    if array.ndim != 3:
        raise InputError(f"Maps and label maps are 3-D [k, j, i]; got shape {array.shape}.")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    origin, spacing, direction = sitk_geometry(ijk_to_ras)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def same_grid(shape_a, ijk_to_ras_a, shape_b, ijk_to_ras_b, tol_mm: float = 1e-3) -> bool:
    """Whether two grids have the same shape and voxel positions.

    Parameters
    ----------
    shape_a, shape_b : tuple of int
        Shapes (k, j, i).
    ijk_to_ras_a, ijk_to_ras_b : ndarray, shape (4, 4)
        Voxel index to RAS mm.
    tol_mm : float
        Largest allowed displacement of a grid corner, mm.

    Returns
    -------
    bool
    """
    if tuple(shape_a) != tuple(shape_b):
        return False
    a = np.asarray(ijk_to_ras_a, dtype=np.float64)
    b = np.asarray(ijk_to_ras_b, dtype=np.float64)
    extent = np.array(shape_a[::-1], dtype=np.float64)  # voxel counts along i, j, k
    # Largest displacement of any corner of the grid between the two matrices.
    corners = np.array(np.meshgrid(*[[0.0, n - 1] for n in extent], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    return bool(np.max(np.abs((a - b) @ corners)) <= tol_mm)


# --------------------------------------------------------------------------- volumes

@dataclass
class Volume:
    """A 3-D array [k, j, i] with its Slicer geometry and file header."""

    array: np.ndarray
    ijk_to_ras: np.ndarray
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None


def _check_readable(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{what} {str(path)!r} does not exist. Check the path.")
    if path.is_dir():
        raise InputError(f"{what} {str(path)!r} is a folder; give the file itself.")


def read_volume(path) -> Volume:
    """Read a 3-D NRRD / NIfTI / MetaImage volume.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    Volume
        ``array`` of shape (k, j, i), ``ijk_to_ras`` (4, 4) in mm, the header keys.

    Raises
    ------
    InputError
        When the file is missing, unreadable, truncated (NIfTI) or not 3-D.
    """
    import SimpleITK as sitk

    path = Path(path)
    _check_readable(path, "Volume")
    if path.name.lower().endswith((".nii", ".nii.gz")):
        from .io.nifti import check_nifti_file

        check_nifti_file(path)  # ITK reads a truncated NIfTI as zeros without a word
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(
            f"Cannot read {str(path)!r} as an image ({_first_line(exc)}). Give a NRRD (.nrrd) or "
            "NIfTI (.nii, .nii.gz) file.") from None
    return _volume_from_image(image, path)


def _volume_from_image(image, path) -> Volume:
    import SimpleITK as sitk

    metadata = {k: image.GetMetaData(k) for k in image.GetMetaDataKeys()}
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise InputError(
            f"{str(path)!r} is a {image.GetDimension()}-D image; a 3-D volume was expected.")
    return Volume(sitk.GetArrayFromImage(image), ijk_to_ras_from_sitk(image), metadata, Path(path))


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


def sidecar_path(map_path) -> Path:
    """The JSON sidecar beside a map file (``r2star.nii.gz`` -> ``r2star.json``).

    Parameters
    ----------
    map_path : str or Path

    Returns
    -------
    Path
    """
    p = Path(map_path)
    stem = p.name
    for ext in (".nii.gz", ".seg.nrrd", ".nrrd", ".nii", ".nhdr", ".mha"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
            break
    return p.with_name(stem + ".json")


def write_volume(path, array, ijk_to_ras, metadata: Mapping[str, Any] | None = None,
                 sidecar: bool = True, compress: bool = True) -> Path:
    """Write a 3-D array with its geometry; header keys and a JSON sidecar.

    Parameters
    ----------
    path : str or Path
        Output file, ``.nrrd`` or ``.nii`` / ``.nii.gz``.
    array : ndarray, shape (k, j, i)
    ijk_to_ras : ndarray, shape (4, 4)
        Voxel index to RAS mm.
    metadata : dict, optional
        JSON-able; written to the sidecar, its scalar entries also become ``IronMapping.<key>``
        NRRD header keys.
    sidecar : bool
        Write ``<name>.json`` beside the file.
    compress : bool
        gzip the data (fast level for NRRD).

    Returns
    -------
    Path

    Raises
    ------
    GeometryError
        For sheared axes in a NIfTI file.
    OutputError
        When the file cannot be written.
    """
    import SimpleITK as sitk

    path = Path(path)
    image = image_from_array(array, ijk_to_ras)
    metadata = dict(metadata or {})
    is_nifti = path.name.endswith((".nii", ".nii.gz"))
    if is_nifti and not np.allclose(
            np.asarray(image.GetDirection()).reshape(3, 3) @ np.asarray(image.GetDirection()).reshape(3, 3).T,
            np.eye(3), atol=1e-4):
        raise GeometryError(
            f"{path.name}: the voxel axes are not perpendicular (sheared geometry), which NIfTI "
            "cannot store. Write NRRD instead (--format nrrd).")
    for key, value in metadata.items():
        if isinstance(value, (str, int, float, bool)) and not is_nifti:
            image.SetMetaData(f"IronMapping.{key}", str(value))
    if is_nifti:
        note = " ".join(f"{k}={metadata[k]}" for k in ("quantity", "unit") if k in metadata)
        image.SetMetaData("ITK_FileNotes", f"IronMapping {note}"[:79])

    def execute(tmp: Path) -> None:
        writer = sitk.ImageFileWriter()
        writer.SetFileName(str(tmp))
        writer.SetUseCompression(bool(compress))
        if compress and not is_nifti:
            writer.SetCompressionLevel(1)  # fast gzip: maps are large, mostly incompressible floats
        try:
            writer.Execute(image)
        except RuntimeError as exc:
            raise output_failure(exc, path, np.asarray(array).nbytes) from None

    replace_atomically(path, execute, keep_extension=True)
    if sidecar:
        write_json(sidecar_path(path), metadata)
    return path


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


# --------------------------------------------------------------------------- label maps

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
