"""Segments onto the echo grid: masks and label arrays from a segmentation node, and a
segmentation node from a label array."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import GeometryError, InputError
from ..image import MultiEchoImage
from .core import SceneTransaction, _node_ids, _slicer, mrml_scene


@dataclass
class Regions:
    """Segments resampled onto the echo grid.

    Attributes
    ----------
    labels : uint16 ndarray, shape (k, j, i)
        0 = no region; where segments overlap, the smaller one wins (so a lesion drawn inside
        the liver is not counted as background liver).
    label_names : dict of int to str
        Label value to segment name.
    segment_ids : dict of int to str
        Label value to segment ID.
    terminology : dict of int to str
        Label value to Slicer terminology string ("" when none).
    masks : dict of int to bool ndarray, shape (k, j, i)
        Full mask of each segment (before overlap resolution).
    overlaps : list of str
        Sentences describing overlaps.
    """

    labels: np.ndarray
    label_names: dict
    segment_ids: dict
    terminology: dict
    masks: dict
    overlaps: list = field(default_factory=list)


def segment_ids_of(segmentation_node) -> list[str]:
    """The segment IDs of a segmentation node, in order.

    Parameters
    ----------
    segmentation_node : vtkMRMLSegmentationNode

    Returns
    -------
    list of str
    """
    seg = segmentation_node.GetSegmentation()
    return [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]


def segment_masks(segmentation_node, segment_ids, shape, ijk_to_ras, scene=None,
                  reference_node=None, allow_empty: bool = False) -> dict:
    """Segments resampled onto a grid with ``ExportSegmentsToLabelmapNode``.

    The temporary nodes it needs are removed again. ``reference_node``'s parent transform, if
    any, is applied to the grid.

    Parameters
    ----------
    segmentation_node : vtkMRMLSegmentationNode
    segment_ids : sequence of str
    shape : tuple of int
        Grid (k, j, i).
    ijk_to_ras : ndarray, shape (4, 4)
        Voxel index to RAS mm of the grid.
    scene : vtkMRMLScene, optional
    reference_node : vtkMRMLVolumeNode, optional
        The volume whose parent transform applies to the grid.
    allow_empty : bool
        Accept a segment with no voxel on the grid (else InputError).

    Returns
    -------
    dict of str to bool ndarray, shape (k, j, i)
        By segment ID.

    Raises
    ------
    InputError
        When a segment cannot be resampled, or is empty on the grid (unless ``allow_empty``).
    GeometryError
        When a resampled segment does not come out on the grid.
    """
    slicer = _slicer()
    import vtk

    scene = mrml_scene(scene)
    segmentation = segmentation_node.GetSegmentation()
    shape = tuple(int(n) for n in shape)
    masks = {}
    transaction = SceneTransaction(scene).__enter__()
    try:
        reference = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "IronMapping reference grid")
        ref_image = vtk.vtkImageData()
        ref_image.SetDimensions(shape[2], shape[1], shape[0])
        ref_image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        reference.SetAndObserveImageData(ref_image)
        reference.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.asarray(ijk_to_ras, float)))
        parent = reference_node.GetParentTransformNode() if reference_node is not None and hasattr(
            reference_node, "GetParentTransformNode") else None
        if parent is not None:
            reference.SetAndObserveTransformNodeID(parent.GetID())
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "IronMapping segment")
        for segment_id in segment_ids:
            segment = segmentation.GetSegment(segment_id)
            id_array = vtk.vtkStringArray()
            id_array.InsertNextValue(segment_id)
            ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation_node, id_array, labelmap, reference)
            if not ok or labelmap.GetImageData() is None:
                raise InputError(f"Segment '{segment.GetName()}' could not be resampled onto the echo "
                                 "grid. Check that it has a binary labelmap representation.")
            mask = np.asarray(slicer.util.arrayFromVolume(labelmap)) > 0
            if mask.shape != shape:
                raise GeometryError(f"Segment '{segment.GetName()}' came out with shape {mask.shape}, "
                                    f"not the grid {shape}.")
            if not mask.any() and not allow_empty:
                raise InputError(
                    f"Segment '{segment.GetName()}' has no voxels inside the echo images: it is empty "
                    "or lies outside the imaged volume. Edit it, or leave it out of the selection.")
            masks[segment_id] = mask.copy()
    finally:
        transaction.rollback()
    return masks


def region_labels(segmentation_node, segment_ids, image: MultiEchoImage, scene=None,
                  reference_node=None) -> Regions:
    """Resample the chosen segments onto the echo grid, whatever the segmentation's geometry.

    Uses ``vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode``; temporary nodes are
    removed.

    Parameters
    ----------
    segmentation_node : vtkMRMLSegmentationNode
    segment_ids : sequence of str or None
        None for all segments.
    image : MultiEchoImage
        The echo grid.
    scene : vtkMRMLScene, optional
    reference_node : vtkMRMLVolumeNode, optional
        As in :func:`segment_masks`.

    Returns
    -------
    Regions

    Raises
    ------
    InputError
        For no segmentation, no segments, an unknown or empty segment.
    """
    scene = mrml_scene(scene)
    if segmentation_node is None:
        raise InputError("No segmentation given.")
    segmentation = segmentation_node.GetSegmentation()
    all_ids = segment_ids_of(segmentation_node)
    ids = list(all_ids if not segment_ids else segment_ids)
    if not ids:
        raise InputError(f"Segmentation '{segmentation_node.GetName()}' has no segments. Draw the "
                         "organs in the Segment Editor first, or clear the segmentation selection.")
    unknown = [i for i in ids if segmentation.GetSegment(i) is None]
    if unknown:
        raise InputError(f"Segment(s) {unknown} are not in '{segmentation_node.GetName()}'. Choose "
                         "from: " + ", ".join(segmentation.GetSegment(i).GetName() for i in all_ids))

    masks = segment_masks(segmentation_node, ids, image.shape, image.ijk_to_ras, scene, reference_node)
    names = {v: segmentation.GetSegment(i).GetName() for v, i in enumerate(ids, start=1)}
    terms = {v: segment_terminology(segmentation.GetSegment(i)) for v, i in enumerate(ids, start=1)}
    masks = {v: masks[i] for v, i in enumerate(ids, start=1)}
    shape = image.shape
    labels = np.zeros(shape, np.uint16)
    overlaps = []
    by_size = sorted(masks, key=lambda v: -int(masks[v].sum()))
    for value in by_size:  # largest first: smaller regions painted last win overlaps
        labels[masks[value]] = value
    for a in masks:
        for b in masks:
            if a < b:
                n = int(np.count_nonzero(masks[a] & masks[b]))
                if n:
                    winner = names[a] if masks[a].sum() < masks[b].sum() else names[b]
                    overlaps.append(f"segments '{names[a]}' and '{names[b]}' overlap in {n} voxels, "
                                    f"counted for the smaller one ('{winner}')")
    return Regions(labels=labels, label_names=names, segment_ids=dict(enumerate(ids, start=1)),
                   terminology=terms, masks=masks, overlaps=overlaps)


def segment_terminology(segment) -> str:
    """Slicer terminology string of a segment ("" when it has none).

    ``vtkSegment.GetTerminology`` exists only since Slicer 5.9 (March 2025); Slicer 5.8 keeps
    the same string in the segment's tag named ``vtkSegment.GetTerminologyEntryTagName()``.

    Parameters
    ----------
    segment : vtkSegment

    Returns
    -------
    str
    """
    getter = getattr(segment, "GetTerminology", None)
    if getter is not None:
        return getter() or ""
    import vtk

    value = vtk.reference("")
    found = segment.GetTag(segment.GetTerminologyEntryTagName(), value)
    return str(value) if found else ""


def add_label_segmentation(labels: np.ndarray, label_names: dict, ijk_to_ras, name: str,
                           scene=None):
    """A segmentation node with one segment per label value (named from ``label_names``).

    Parameters
    ----------
    labels : int ndarray, shape (k, j, i)
        Values 0-255; 0 is background.
    label_names : dict of int to str
    ijk_to_ras : ndarray, shape (4, 4)
        Voxel index to RAS mm.
    name : str
        Node name.
    scene : vtkMRMLScene, optional

    Returns
    -------
    vtkMRMLSegmentationNode

    Raises
    ------
    InputError
        When the segments cannot be made (the scene is left as it was).
    """
    slicer = _slicer()
    scene = mrml_scene(scene)
    with SceneTransaction(scene) as transaction:
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        segmentation.CreateDefaultDisplayNodes()
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        if not import_labels(scene, segmentation, labels, ijk_to_ras, f"{name} labels"):
            raise InputError(f"Could not make segments from the label map '{name}'.")
        seg = segmentation.GetSegmentation()
        values = [int(v) for v in np.unique(labels) if v]
        for i, value in enumerate(values):
            segment = seg.GetNthSegment(i)
            if segment is not None and value in label_names:
                segment.SetName(label_names[value])
        _ = transaction
    return segmentation


def import_labels(scene, segmentation_node, labels: np.ndarray, ijk_to_ras, name: str) -> bool:
    """Add one segment per label value to a segmentation through a temporary label map node.

    The temporary node is removed again.

    Parameters
    ----------
    scene : vtkMRMLScene
    segmentation_node : vtkMRMLSegmentationNode
    labels : int ndarray, shape (k, j, i)
    ijk_to_ras : ndarray, shape (4, 4)
        Voxel index to RAS mm.
    name : str
        Name of the temporary label map node.

    Returns
    -------
    bool
        True on success.
    """
    slicer = _slicer()
    before = _node_ids(scene)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name)
    slicer.util.updateVolumeFromArray(labelmap, np.ascontiguousarray(labels))
    labelmap.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.asarray(ijk_to_ras, float)))
    ok = slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
        labelmap, segmentation_node)
    for node_id in _node_ids(scene) - before:
        node = scene.GetNodeByID(node_id)
        if node is not None and not node.IsA("vtkMRMLSubjectHierarchyNode"):
            scene.RemoveNode(node)
    return bool(ok)
