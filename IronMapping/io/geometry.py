"""Voxel-grid helpers shared by the readers: LPS/RAS conversion and IJK-to-RAS matrices."""

from __future__ import annotations

import numpy as np

from ..errors import GeometryError

#: Multiplying an LPS point (DICOM, ITK) by this gives RAS (Slicer, NIfTI), and back.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def sitk_ijk_to_ras(image) -> np.ndarray:
    """IJK-to-RAS matrix of the first three axes of a SimpleITK image (ITK works in LPS).

    Parameters
    ----------
    image : SimpleITK.Image
        2-D, 3-D or 4-D.

    Returns
    -------
    ndarray, shape (4, 4)
        Voxel index (i, j, k) to RAS millimetres.
    """
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    n = min(dim, 3)
    lps = np.eye(4)
    lps[:n, :n] = direction[:n, :n] * spacing[:n]
    lps[:n, 3] = origin[:n]
    return LPS_TO_RAS @ lps


def slice_stack_ijk_to_ras(row_dir, col_dir, pixel_spacing, positions, slice_spacing=None):
    """IJK-to-RAS of a stack of DICOM slices already sorted along the slice normal.

    Parameters
    ----------
    row_dir, col_dir : (3,) arrays
        ImageOrientationPatient halves (LPS): direction of increasing column index i, and of
        increasing row index j.
    pixel_spacing : (2,) sequence
        DICOM PixelSpacing: [spacing between rows (along j), spacing between columns (along i)].
    positions : (n, 3) array
        ImagePositionPatient (LPS, mm) of each slice, in k order.
    slice_spacing : float, optional
        Used only for a single slice (SpacingBetweenSlices or SliceThickness).

    Returns
    -------
    ijk_to_ras : (4, 4) array
    notes : list of str
        Warnings (non-uniform spacing, slices off a straight line).
    """
    row_dir = np.asarray(row_dir, dtype=np.float64)
    col_dir = np.asarray(col_dir, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    normal = np.cross(row_dir, col_dir)
    notes = []
    lps = np.eye(4)
    lps[:3, 0] = row_dir * float(pixel_spacing[1])
    lps[:3, 1] = col_dir * float(pixel_spacing[0])
    n = positions.shape[0]
    if n > 1:
        step = (positions[-1] - positions[0]) / (n - 1)
        along = positions @ normal
        gaps = np.diff(along)
        if np.any(gaps <= 1e-6):
            raise GeometryError(
                "Two slices of one echo share a position along the slice normal; the series "
                "may hold repeated acquisitions. Load the files of one repetition only.")
        mean_gap = float(np.mean(gaps))
        if np.max(np.abs(gaps - mean_gap)) > max(0.01 * mean_gap, 1e-3):
            notes.append(
                f"Slice spacing is not uniform ({gaps.min():.3f} to {gaps.max():.3f} mm); the "
                f"mean ({mean_gap:.3f} mm) is used, so positions and volumes are approximate.")
        line = positions[0] + np.arange(n)[:, None] * step
        off = float(np.abs(positions - line).max())
        if off > 0.01 and not notes:
            notes.append(f"Slice positions deviate from a straight line by up to {off:.3f} mm.")
        lps[:3, 2] = step
    else:
        thickness = float(slice_spacing) if slice_spacing else 1.0
        lps[:3, 2] = normal * thickness
    lps[:3, 3] = positions[0]
    return LPS_TO_RAS @ lps, notes
