"""3-D volume files (NRRD / NIfTI through SimpleITK) with Slicer's geometry.

Geometry convention
-------------------
IronMapping keeps Slicer's ``ijk_to_ras`` 4x4 matrix: voxel index (i, j, k) to RAS millimetres,
arrays in KJI order ``[k, j, i]``. ITK (and so every file written here) uses LPS physical space:
``LPS = diag(-1, -1, 1) @ RAS``, ``point = origin + direction @ (spacing * (i, j, k))``, and
``sitk.GetArrayFromImage`` returns the same KJI order. The helpers below convert exactly.

NRRD keeps the geometry to double precision; NIfTI stores it in float32 (its format), so a NIfTI
round trip agrees to about 1e-5 mm. `write_volume` puts the scalar metadata in the NRRD header
(keys ``IronMapping.*``) and all of it in a JSON sidecar beside the file (``<name>.json``), for
NIfTI whose header has no room for it. The maps written from a fit are in
:mod:`IronMapping.maps_io`, label maps and segmentations in :mod:`IronMapping.label_maps`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import GeometryError, InputError
from .fileio import first_line as _first_line, output_failure, replace_atomically, write_json
from .io.geometry import LPS_TO_RAS, sitk_ijk_to_ras


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

