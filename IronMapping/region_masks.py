"""Regions on the map grid: label arrays and masks checked against the maps' shape.

Everything in IronMapping's region code works on boolean masks on the map grid (k, j, i);
`label_masks` turns a label array into such masks after checking its shape.
"""

from __future__ import annotations

import numpy as np

from .errors import GeometryError, InputError


def check_labels(labels, spatial_shape) -> np.ndarray:
    """The label array as integers, after checking it lies on the map grid.

    Parameters
    ----------
    labels : ndarray, shape (k, j, i)
        Integer, boolean or whole-number float labels; 0 is background.
    spatial_shape : tuple of int
        The maps' spatial shape (k, j, i).

    Returns
    -------
    int ndarray, shape (k, j, i)

    Raises
    ------
    GeometryError
        When its shape differs from the maps' spatial shape.
    InputError
        When float labels are not whole numbers.
    """
    labels = np.asarray(labels)
    spatial_shape = tuple(int(s) for s in spatial_shape)
    if labels.shape != spatial_shape:
        raise GeometryError(
            f"The label map has shape {labels.shape} but the R2* maps have shape {spatial_shape} "
            "(k, j, i). Regions must lie on the map grid: resample the label map or segmentation "
            "onto the multi-echo volume first (e.g. IronMapping.maps_io.resample_labels, or "
            "export the segments with the multi-echo volume as reference in Slicer).")
    if labels.dtype == bool:
        return labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise InputError(
                "Label values must be whole numbers (0 = background). Convert the label map "
                "with np.rint(labels).astype(int) if it was stored as floating point.")
        labels = labels.astype(np.int64)
    return labels


def check_mask(mask, spatial_shape) -> np.ndarray:
    """A region mask as booleans, after checking it lies on the map grid.

    Parameters
    ----------
    mask : ndarray, shape (k, j, i)
    spatial_shape : tuple of int
        The maps' spatial shape (k, j, i).

    Returns
    -------
    bool ndarray, shape (k, j, i)

    Raises
    ------
    GeometryError
        When its shape differs from ``spatial_shape``.
    """
    mask = np.asarray(mask)
    if mask.shape != tuple(spatial_shape):
        raise GeometryError(
            f"The region mask has shape {mask.shape} but the maps have shape {tuple(spatial_shape)} "
            "(k, j, i). Resample the region onto the map grid first.")
    return mask.astype(bool)


def label_masks(labels, label_names: dict, spatial_shape) -> list[tuple[int, str, np.ndarray]]:
    """A mask for every named label and every unnamed non-zero label present.

    Named labels with no voxels are kept (their statistics then say the region is empty).

    Parameters
    ----------
    labels : int ndarray, shape (k, j, i)
    label_names : dict of int to str
        Keys convertible to int; unnamed labels are called "label <value>".
    spatial_shape : tuple of int
        The maps' spatial shape (k, j, i).

    Returns
    -------
    list of (int, str, bool ndarray of shape (k, j, i))
        (value, name, mask), by value.

    Raises
    ------
    GeometryError, InputError
        As `check_labels`, and for label_names keys that are not integers.
    """
    labels = check_labels(labels, spatial_shape)
    present = np.unique(labels)
    present = [int(v) for v in present if v != 0]
    names = {}
    for key, name in (label_names or {}).items():
        try:
            value = int(key)
        except (TypeError, ValueError):
            raise InputError(
                f"label_names must map integer label values to names; got key {key!r}.") from None
        names[value] = str(name)
    values = sorted(set(names) | set(present))
    return [(v, names.get(v, f"label {v}"), labels == v) for v in values if v != 0]
