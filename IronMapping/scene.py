"""The bridge between IronMapping and a Slicer MRML scene (the only module that touches MRML).

Reading
    :func:`read_multiecho` turns a volume sequence (MultiVolumeImporter's default), a legacy
    multi-frame volume (vtkMRMLMultiVolumeNode), the proxy volume of a sequence browser or a
    list of scalar volumes into a :class:`~IronMapping.image.MultiEchoImage`.
    Echo times come from, in this order: the caller, the ``MultiVolume.FrameLabels``
    attribute (when the frames are identified by EchoTime; sequence index values are frame
    numbers, not echo times), a sequence index named after the echo time, the DICOM
    database (tag EchoTime 0018,0081) through each volume's ``DICOM.instanceUIDs``.
    :func:`region_labels` resamples segments onto the echo grid.

Writing
    :func:`write_maps`, :func:`write_table` and :func:`write_plot` create or update output
    nodes named after the input ("<input> R2*", ...) that carry ``IronMapping.*`` attributes
    (quantity, unit, method, echo times, software version). Outputs are found again through
    a node reference to the input plus the ``IronMapping.Output`` attribute, so re-running
    updates them in place (names may be edited freely by the user).

:class:`SceneTransaction` removes every node added when something fails, so bad input leaves
the scene as it was.

Works with the full Slicer application and with the ``slicer-core`` wheel (plain Python):
``slicer.app``, ``slicer.modules`` and ``slicer.dicomDatabase`` are only used when present.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .io.metadata import json_default as _json_default
from . import RESEARCH_USE_STATEMENT, __version__
from .errors import EchoTimeError, GeometryError, InputError
from .image import MultiEchoImage

ATTRIBUTE_PREFIX = "IronMapping."
INPUT_REFERENCE_ROLE = "ironMappingInput"
"""Node reference role from every output node to the input node it was computed from."""

ECHO_TIME_TAG = "0018,0081"
FIELD_STRENGTH_TAG = "0018,0087"
SCANNING_SEQUENCE_TAG = "0018,0020"
MANUFACTURER_TAG = "0008,0070"

#: Output key -> (node name suffix, node class). Suffixes of R2*/T2* lose the star for spin echo.
MAP_OUTPUTS = {
    "r2star": ("R2*", "vtkMRMLScalarVolumeNode"),
    "t2star": ("T2*", "vtkMRMLScalarVolumeNode"),
    "s0": ("S0", "vtkMRMLScalarVolumeNode"),
    "quality": ("fit quality R^2", "vtkMRMLScalarVolumeNode"),
    "status": ("fit status", "vtkMRMLLabelMapVolumeNode"),
    "pdff": ("PDFF", "vtkMRMLScalarVolumeNode"),
}


def _slicer():
    import slicer  # noqa: PLC0415 - Slicer or slicer-core; imported late so the library loads without it

    return slicer


def mrml_scene(scene=None):
    """The given scene, else ``slicer.mrmlScene``; raise InputError when there is none."""
    if scene is not None:
        return scene
    scene = getattr(_slicer(), "mrmlScene", None)
    if scene is None:
        raise InputError(
            "No MRML scene: pass scene=... or set slicer.mrmlScene (outside the Slicer application, "
            "e.g. slicer.mrmlScene = slicer.vtkMRMLScene()).")
    return scene


class SceneTransaction:
    """Context manager: on an exception, remove every node added to the scene meanwhile.

    Also usable for deliberate clean-up of temporary nodes (``rollback()``).
    """

    def __init__(self, scene):
        self.scene = scene
        self._before: set[str] = set()

    def __enter__(self):
        self._before = _node_ids(self.scene)
        return self

    def rollback(self) -> None:
        added = [self.scene.GetNodeByID(i) for i in _node_ids(self.scene) - self._before]
        # Display, storage and colour nodes first, then their owners.
        added.sort(key=lambda n: 0 if n is not None and not n.IsA("vtkMRMLDisplayableNode") else 1)
        for node in added:
            if node is not None and node.GetScene() is self.scene:
                self.scene.RemoveNode(node)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.rollback()
        return False


def _node_ids(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def nodes_by_class(scene, class_name: str) -> list:
    """Nodes of a class (and subclasses) in scene order."""
    collection = scene.GetNodesByClass(class_name)
    collection.UnRegister(None)  # the C++ call returns a new reference that Python also holds
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


# --------------------------------------------------------------------------- DICOM helpers

def _database_value(lookup: str, key: str, tag: str) -> str:
    """database.<lookup>(key, tag) from Slicer's DICOM database; "" outside the application."""
    database = getattr(_slicer(), "dicomDatabase", None)
    if database is None or not key:
        return ""
    try:
        return str(getattr(database, lookup)(key, tag) or "")
    except Exception:  # a closed or missing database, or a missing file, is not an input error
        return ""


def dicom_value(uid: str, tag: str) -> str:
    """A tag of a DICOM instance (by UID) from Slicer's DICOM database."""
    return _database_value("instanceValue", uid, tag)


def _first_number(text: str) -> float | None:
    match = re.search(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", text or "")
    return float(match.group(0)) if match else None


def _instance_uids(node) -> list[str]:
    value = node.GetAttribute("DICOM.instanceUIDs") if node is not None else None
    return value.split() if value else []


# --------------------------------------------------------------------------- reading inputs

@dataclass
class InputDescription:
    """What was found about an input before reading its voxels.

    nodes : the input node(s) as given (one node, or the list of echo volumes).
    primary : the node that names the outputs and is referenced by them.
    display : a scalar volume in the scene showing the first echo (background of the maps).
    echo_nodes : one volume node per echo (may live inside a sequence node).
    kind : "sequence" | "multivolume" | "volumes".
    echo_times_ms : echo times found in the metadata, None when not found.
    echo_time_source : where they came from.
    field_strength_t : from DICOM (0018,0087), None when unknown.
    quantity : "T2*" (gradient echo) or "T2" (spin echo, from DICOM ScanningSequence).
    """

    nodes: list
    primary: Any
    display: Any
    echo_nodes: list
    kind: str
    frame_component: bool = False
    echo_times_ms: np.ndarray | None = None
    echo_time_source: str = ""
    field_strength_t: float | None = None
    quantity: str = "T2*"
    metadata: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.primary.GetName() or self.primary.GetID()

    @property
    def n_echoes(self) -> int:
        return len(self.echo_nodes)


def _sequence_of_proxy(node, scene):
    """The volume sequence whose browser shows ``node`` as proxy, else None."""
    slicer = _slicer()
    for browser in nodes_by_class(scene, "vtkMRMLSequenceBrowserNode"):
        sequence = browser.GetSequenceNode(node) if browser is not None else None
        if sequence is not None and isinstance(sequence, slicer.vtkMRMLSequenceNode):
            return sequence, browser
    return None, None


def _proxy_of_sequence(sequence, scene):
    for browser in nodes_by_class(scene, "vtkMRMLSequenceBrowserNode"):
        proxy = browser.GetProxyNode(sequence) if browser is not None else None
        if proxy is not None:
            return proxy
    return None


def _frame_label_echo_times(node) -> tuple[np.ndarray | None, str]:
    """Echo times (ms) from MultiVolume attributes, or (None, reason)."""
    labels = node.GetAttribute("MultiVolume.FrameLabels")
    if not labels:
        return None, ""
    tag = (node.GetAttribute("MultiVolume.FrameIdentifyingDICOMTagName") or "EchoTime").replace(" ", "")
    if tag.lower() != "echotime":
        return None, (f"its frames are identified by {tag}, not EchoTime, so MultiVolume.FrameLabels "
                      "are not echo times")
    try:
        values = np.array([float(v) for v in labels.replace(";", ",").split(",") if v.strip()])
    except ValueError:
        return None, f"MultiVolume.FrameLabels {labels!r} are not numbers"
    unit = (node.GetAttribute("MultiVolume.FrameIdentifyingDICOMTagUnits") or "ms").strip().lower()
    if unit in ("s", "sec", "second", "seconds"):
        values = values * 1000.0
    elif unit in ("us", "microseconds"):
        values = values / 1000.0
    return values, "MultiVolume.FrameLabels"


def _frame_order(sequence, labels: np.ndarray) -> np.ndarray:
    """FrameLabels are per frame number; data nodes are in index order. Map one to the other
    when the index values are the frame numbers 0..n-1 (as MultiVolumeImporter writes them)."""
    n = sequence.GetNumberOfDataNodes()
    try:
        frames = [int(float(sequence.GetNthIndexValue(i))) for i in range(n)]
    except ValueError:
        return labels
    if len(labels) == n and sorted(frames) == list(range(n)):
        return np.asarray(labels)[frames]
    return labels


def _index_echo_times(sequence) -> tuple[np.ndarray | None, str]:
    """Echo times from a sequence index named after the echo time (not MultiVolumeImporter's)."""
    name = (sequence.GetIndexName() or "").replace(" ", "").lower()
    if "echo" not in name and name not in ("te",):
        return None, ""
    try:
        values = np.array([float(sequence.GetNthIndexValue(i))
                           for i in range(sequence.GetNumberOfDataNodes())])
    except ValueError:
        return None, ""
    unit = (sequence.GetIndexUnit() or "ms").strip().lower()
    if unit == "s":
        values = values * 1000.0
    return values, f"sequence index '{sequence.GetIndexName()}'"


def _dicom_echo_times(uid_groups: Sequence[Sequence[str]]) -> np.ndarray | None:
    values = []
    for uids in uid_groups:
        te = _first_number(dicom_value(uids[0], ECHO_TIME_TAG)) if uids else None
        if te is None:
            return None
        values.append(te)
    return np.array(values) if values else None


def dicom_file_value(path: str, tag: str) -> str:
    """A tag of a DICOM file through Slicer's DICOM database."""
    return _database_value("fileValue", path, tag)


def _dicom_facts(uids: Sequence[str], files: Sequence[str] = ()) -> dict:
    """Field strength, scanning sequence and manufacturer of the first instance (by UID, else
    by file path as MultiVolumeImporter records them in MultiVolume.FrameFileList)."""
    from .io.checks import field_strength_from

    if uids:
        read = lambda tag: dicom_value(uids[0], tag)  # noqa: E731
    elif files:
        read = lambda tag: dicom_file_value(files[0], tag)  # noqa: E731
    else:
        return {}
    facts = {}
    field_t = field_strength_from(_first_number(read(FIELD_STRENGTH_TAG)))
    if field_t:
        facts["field_strength_t"] = field_t
    sequence = read(SCANNING_SEQUENCE_TAG).upper()
    if sequence:
        facts["scanning_sequence"] = sequence
    manufacturer = read(MANUFACTURER_TAG)
    if manufacturer:
        facts["manufacturer"] = manufacturer
    return facts


def describe_input(input_nodes, scene=None) -> InputDescription:
    """Find the echo volumes, echo times, field strength and quantity of an input, without
    reading voxels. ``input_nodes`` is one node or a list of scalar volume nodes."""
    slicer = _slicer()
    scene = mrml_scene(scene)
    if input_nodes is None:
        raise InputError("No input selected. Choose the multi-echo series (a volume sequence, a "
                         "MultiVolume or several echo volumes).")
    if isinstance(input_nodes, (list, tuple)):
        nodes = [n for n in input_nodes if n is not None]
        if not nodes:
            raise InputError("The list of echo volumes is empty. Select one volume per echo.")
        if len(nodes) == 1:
            return describe_input(nodes[0], scene)
        for n in nodes:
            if not isinstance(n, slicer.vtkMRMLScalarVolumeNode) or n.GetImageData() is None:
                raise InputError(f"'{n.GetName()}' is not a scalar volume with image data; give one "
                                 "scalar volume per echo.")
        desc = InputDescription(nodes=nodes, primary=nodes[0], display=nodes[0], echo_nodes=nodes,
                                kind="volumes")
        uid_groups = [_instance_uids(n) for n in nodes]
        te = _dicom_echo_times(uid_groups)
        if te is None:
            te = _attribute_echo_times(nodes)
            source = "DICOM.EchoTime attributes" if te is not None else ""
        else:
            source = "DICOM database (EchoTime 0018,0081)"
        desc.echo_times_ms, desc.echo_time_source = te, source
        _apply_dicom_facts(desc, uid_groups[0])
        return desc

    node = input_nodes
    if isinstance(node, slicer.vtkMRMLSequenceNode):
        return _describe_sequence(node, scene, primary=node, display=_proxy_of_sequence(node, scene))
    if isinstance(node, slicer.vtkMRMLScalarVolumeNode):
        sequence, _ = _sequence_of_proxy(node, scene)
        if sequence is not None:
            return _describe_sequence(sequence, scene, primary=sequence, display=node)
        image = node.GetImageData()
        if image is None:
            raise InputError(f"Volume '{node.GetName()}' has no image data. Load the series again.")
        n_frames = image.GetNumberOfScalarComponents()
        if n_frames > 1:
            desc = InputDescription(nodes=[node], primary=node, display=None,
                                    echo_nodes=[node] * n_frames, kind="multivolume",
                                    frame_component=True)
            te, source = _frame_label_echo_times(node)
            uids = _instance_uids(node)
            if te is None and uids and len(uids) % n_frames == 0:
                per = len(uids) // n_frames
                te = _dicom_echo_times([uids[f * per:(f + 1) * per] for f in range(n_frames)])
                source = "DICOM database (EchoTime 0018,0081)" if te is not None else source
            desc.echo_times_ms = te
            desc.echo_time_source = source if te is not None else ""
            desc.metadata["echo_time_problem"] = "" if te is not None else source
            _apply_dicom_facts(desc, uids)
            return desc
        raise EchoTimeError(
            f"'{node.GetName()}' is a single volume (one echo). R2*/T2* needs at least two echoes: "
            "select the multi-echo volume sequence, or several echo volumes.")
    raise InputError(
        f"'{node.GetName()}' ({node.GetClassName()}) is not a multi-echo input. Select a volume "
        "sequence, a MultiVolume or several scalar volumes (one per echo).")


def _attribute_echo_times(nodes) -> np.ndarray | None:
    values = [_first_number(n.GetAttribute("DICOM.EchoTime") or n.GetAttribute("MultiVolume.DICOM.EchoTime")
                            or "") for n in nodes]
    return None if any(v is None for v in values) else np.array(values)


def _apply_dicom_facts(desc: InputDescription, uids) -> None:
    files = (desc.nodes[0].GetAttribute("MultiVolume.FrameFileList") or "").split(",")
    facts = _dicom_facts(uids, [f for f in files if f])
    desc.field_strength_t = facts.get("field_strength_t")
    if desc.field_strength_t is None:
        # Set by IronMapping itself (e.g. the sample phantom) or by a user script.
        desc.field_strength_t = _first_number(desc.nodes[0].GetAttribute(ATTRIBUTE_PREFIX + "FieldStrengthT") or "")
    if facts.get("scanning_sequence"):
        from .io.checks import quantity_from_sequence

        desc.quantity = quantity_from_sequence(facts["scanning_sequence"].split("\\"))
    desc.metadata.update({k: v for k, v in facts.items() if k != "field_strength_t"})


def _describe_sequence(sequence, scene, primary, display) -> InputDescription:
    slicer = _slicer()
    n = sequence.GetNumberOfDataNodes()
    echo_nodes = [sequence.GetNthDataNode(i) for i in range(n)]
    if not all(isinstance(e, slicer.vtkMRMLScalarVolumeNode) for e in echo_nodes):
        raise InputError(f"Sequence '{sequence.GetName()}' does not hold scalar volumes; select a "
                         "volume sequence of the echoes.")
    desc = InputDescription(nodes=[sequence], primary=primary, display=display,
                            echo_nodes=echo_nodes, kind="sequence")
    te, source = _frame_label_echo_times(sequence)
    problem = source if te is None else ""
    if te is not None:
        te = _frame_order(sequence, te)
    if te is None:
        te, source = _index_echo_times(sequence)
    uid_groups = [_instance_uids(e) for e in echo_nodes]
    if te is None and all(uid_groups):
        te = _dicom_echo_times(uid_groups)
        source = "DICOM database (EchoTime 0018,0081)" if te is not None else ""
    if te is None:
        te = _attribute_echo_times(echo_nodes)
        source = "DICOM.EchoTime attributes" if te is not None else ""
    desc.echo_times_ms, desc.echo_time_source = te, (source if te is not None else "")
    desc.metadata["echo_time_problem"] = problem
    all_uids = [u for g in uid_groups for u in g] or _instance_uids(sequence)
    _apply_dicom_facts(desc, all_uids)
    return desc


def _ijk_to_ras(node) -> np.ndarray:
    slicer = _slicer()
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix).copy()


def read_multiecho(input_nodes, echo_times_ms=None, field_strength_t=None, scene=None,
                   description: InputDescription | None = None) -> tuple[MultiEchoImage, InputDescription]:
    """Read a multi-echo input from the scene into a MultiEchoImage (signal [echo, k, j, i]).

    ``echo_times_ms`` (typed by the user) override what the metadata says; ``field_strength_t``
    likewise. Echoes are checked and sorted by :func:`IronMapping.io.checks.stack_echoes`, the
    same rules as for files. Raises EchoTimeError / GeometryError / InputError with advice;
    never changes the scene.
    """
    slicer = _slicer()
    from .io.checks import stack_echoes

    desc = description or describe_input(input_nodes, scene)
    notes = []
    if echo_times_ms is not None and len(np.atleast_1d(echo_times_ms)) > 0:
        te = [float(t) for t in np.ravel(echo_times_ms)]
        source = "given"
        found = desc.echo_times_ms
        if found is not None and len(found) == len(te) and not np.allclose(found, te, atol=0.01):
            notes.append("Echo times typed in (" + ", ".join(f"{t:g}" for t in te) + " ms) replace "
                         f"those of the metadata ({desc.echo_time_source}: "
                         + ", ".join(f"{t:g}" for t in found) + " ms).")
    elif desc.echo_times_ms is not None:
        te, source = [float(t) for t in desc.echo_times_ms], desc.echo_time_source
    else:
        te, source = None, ""
    if desc.n_echoes < 2:
        raise EchoTimeError(f"'{desc.name}' has only one echo; R2*/T2* needs at least two. Load the "
                            "whole multi-echo series.")
    if te is not None and len(te) != desc.n_echoes:
        raise EchoTimeError(
            f"'{desc.name}' has {desc.n_echoes} echoes but {len(te)} echo times were given "
            f"({', '.join(f'{t:g}' for t in te)} ms). Give exactly one echo time (ms) per echo.")

    if desc.frame_component:
        node = desc.echo_nodes[0]
        array = slicer.util.arrayFromVolume(node)  # [k, j, i, frame]
        if array.ndim != 4:
            raise InputError(f"'{node.GetName()}' does not hold one frame per echo.")
        volumes = [np.asarray(array[..., f], dtype=np.float32) for f in range(array.shape[-1])]
        matrices = [_ijk_to_ras(node)] * len(volumes)
        names = [f"{node.GetName()} frame {f + 1}" for f in range(len(volumes))]
    else:
        volumes, matrices, names = [], [], []
        for e, node in enumerate(desc.echo_nodes):
            image = node.GetImageData()
            if image is None or image.GetNumberOfScalarComponents() != 1:
                raise InputError(f"Echo {e + 1} ('{node.GetName()}') is not a scalar volume with image "
                                 "data. Load the series again.")
            volumes.append(np.asarray(slicer.util.arrayFromVolume(node), dtype=np.float32))
            matrices.append(_ijk_to_ras(node))
            names.append(node.GetName() or f"echo {e + 1}")

    problem = desc.metadata.get("echo_time_problem")
    looked_in = [f"'{desc.name}': " + (problem or "MultiVolume.FrameLabels, sequence index, DICOM "
                                                  "database (EchoTime 0018,0081)")]
    field_t = field_strength_t if field_strength_t else desc.field_strength_t
    metadata = {k: v for k, v in desc.metadata.items() if k != "echo_time_problem"}
    metadata.update({"source": f"Slicer node '{desc.name}' ({desc.kind})", "echo_time_source": source,
                     "warnings": notes})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # re-sorting is reported in metadata["warnings"]
        image = stack_echoes(volumes, te, np.stack(matrices), quantity=desc.quantity,
                             field_strength_t=field_t, metadata=metadata, names=names,
                             looked_in=looked_in, warn=False)
    return image, desc


# --------------------------------------------------------------------------- segments

@dataclass
class Regions:
    """Segments resampled onto the echo grid.

    labels : uint16 [k, j, i], 0 = no region; where segments overlap, the smaller one wins
        (so a lesion drawn inside the liver is not counted as background liver).
    label_names : {label value: segment name}
    segment_ids : {label value: segment ID}
    terminology : {label value: Slicer terminology string ("" when none)}
    masks : {label value: bool [k, j, i]} full mask of each segment (before overlap resolution)
    overlaps : list of sentences describing overlaps
    """

    labels: np.ndarray
    label_names: dict
    segment_ids: dict
    terminology: dict
    masks: dict
    overlaps: list = field(default_factory=list)


def segment_ids_of(segmentation_node) -> list[str]:
    seg = segmentation_node.GetSegmentation()
    return [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]


def segment_masks(segmentation_node, segment_ids, shape, ijk_to_ras, scene=None,
                  reference_node=None, allow_empty: bool = False) -> dict:
    """{segment ID: bool mask [k, j, i]} of segments resampled onto a grid (shape, ijk_to_ras)
    with ``ExportSegmentsToLabelmapNode``. The temporary nodes it needs are removed again.
    ``reference_node``'s parent transform, if any, is applied to the grid."""
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
    """Resample the chosen segments (all when ``segment_ids`` is None) onto the echo grid with
    ``vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode``, whatever the
    segmentation's own geometry. Temporary nodes are removed; raises InputError for an unknown
    or empty segment."""
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
    """
    getter = getattr(segment, "GetTerminology", None)
    if getter is not None:
        return getter() or ""
    import vtk

    value = vtk.reference("")
    found = segment.GetTag(segment.GetTerminologyEntryTagName(), value)
    return str(value) if found else ""


# --------------------------------------------------------------------------- finding outputs

def find_output(input_node, key: str, scene=None, class_name: str = "vtkMRMLNode"):
    """The output node ``key`` previously made from ``input_node``, else None."""
    scene = mrml_scene(scene)
    if input_node is None:
        return None
    found = None
    for node in nodes_by_class(scene, class_name):
        if (node.GetAttribute(ATTRIBUTE_PREFIX + "Output") == key
                and node.GetNodeReferenceID(INPUT_REFERENCE_ROLE) == input_node.GetID()):
            found = node
    return found


def outputs_of(input_node, scene=None) -> dict:
    """All IronMapping outputs of ``input_node``: {key: node}."""
    scene = mrml_scene(scene)
    result = {}
    for i in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(i)
        key = node.GetAttribute(ATTRIBUTE_PREFIX + "Output")
        if key and node.GetNodeReferenceID(INPUT_REFERENCE_ROLE) == input_node.GetID():
            result[key] = node
    return result


def _get_or_create(scene, input_node, key, class_name, name, reuse=True):
    node = find_output(input_node, key, scene, class_name) if reuse else None
    if node is None:
        node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name) if not reuse else name)
        node.SetAttribute(ATTRIBUTE_PREFIX + "Output", key)
        node.SetNodeReferenceID(INPUT_REFERENCE_ROLE, input_node.GetID())
    return node


def _set_attributes(node, attributes: dict) -> None:
    for key, value in attributes.items():
        if value is None:
            text = ""
        elif isinstance(value, str):
            text = value
        elif isinstance(value, (list, tuple, np.ndarray)) and all(
                isinstance(v, (int, float, np.number)) for v in np.ravel(value)):
            text = ",".join(f"{float(v):g}" for v in np.ravel(value))
        elif isinstance(value, (dict, list, tuple)):
            text = json.dumps(value, default=_json_default)
        else:
            text = str(value)
        node.SetAttribute(ATTRIBUTE_PREFIX + key, text)


def output_attributes(node) -> dict:
    """{attribute name without the prefix: value} of an IronMapping output node."""
    result = {}
    for name in node.GetAttributeNames() or ():
        if name.startswith(ATTRIBUTE_PREFIX):
            result[name[len(ATTRIBUTE_PREFIX):]] = node.GetAttribute(name)
    return result


# --------------------------------------------------------------------------- colours

def _colour_table(scene, key: str, name: str, colours: np.ndarray, names: Sequence[str] | None = None):
    """A user colour table owned by IronMapping (found again by attribute), colours [n, 4] 0..1."""
    slicer = _slicer()
    table = None
    for candidate in nodes_by_class(scene, "vtkMRMLColorTableNode"):
        if candidate.GetAttribute(ATTRIBUTE_PREFIX + "ColorTable") == key:
            table = candidate
    if table is None:
        table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
        table.SetAttribute(ATTRIBUTE_PREFIX + "ColorTable", key)
    table.SetTypeToUser()
    table.SetNumberOfColors(len(colours))
    table.GetLookupTable().SetNumberOfTableValues(len(colours))
    for i, (r, g, b, a) in enumerate(colours):
        label = names[i] if names is not None else ""
        table.SetColor(i, label, float(r), float(g), float(b), float(a))
    table.GetLookupTable().SetRange(0, len(colours) - 1)
    table.GetLookupTable().SetNanColor(0.0, 0.0, 0.0, 0.0)  # unfitted voxels (NaN) stay see-through
    _ = slicer
    return table


def iron_colours(n: int = 256, reverse: bool = False) -> np.ndarray:
    """"Iron" colour ramp [n, 4]: black -> deep red -> orange -> yellow -> white (more iron, hotter)."""
    x = np.linspace(0.0, 1.0, n)
    r = np.clip(1.6 * x, 0, 1)
    g = np.clip(1.6 * x - 0.55, 0, 1)
    b = np.clip(2.5 * x - 1.5, 0, 1)
    rgba = np.stack([r, g, b, np.ones(n)], axis=1)
    return rgba[::-1].copy() if reverse else rgba


def status_colours() -> tuple[np.ndarray, list[str]]:
    from .relaxometry import Status

    palette = {0: (0, 0, 0, 0), 1: (0.2, 0.7, 0.3, 1), 2: (0.95, 0.8, 0.1, 1),
               3: (0.9, 0.3, 0.1, 1), 4: (0.7, 0.2, 0.8, 1), 5: (0.2, 0.4, 0.9, 1)}
    n = max(int(s) for s in Status) + 1
    colours = np.array([palette.get(i, (0.5, 0.5, 0.5, 1)) for i in range(n)], dtype=float)
    names = [f"{Status(i).name.lower().replace('_', ' ')}: {Status.describe(i)}" for i in range(n)]
    return colours, names


def _robust_range(values: np.ndarray, lo_pct=1.0, hi_pct=99.0, floor=None) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [lo_pct, hi_pct])
    if floor is not None:
        lo = max(lo, floor)
    if hi <= lo:
        hi = lo + max(abs(lo) * 0.1, 1.0)
    return float(lo), float(hi)


# --------------------------------------------------------------------------- writing maps

def _quantity_names(quantity: str) -> dict:
    star = "*" if quantity == "T2*" else ""
    return {"r2star": f"R2{star}", "t2star": f"T2{star}"}


def write_maps(desc: InputDescription, image: MultiEchoImage, fit, extra_attributes=None,
               reuse: bool = True, scene=None) -> dict:
    """Create or update one volume node per map of ``fit`` (r2star, t2star, s0, quality,
    status, and pdff when the fit has it). Returns {key: node}."""
    slicer = _slicer()
    from .maps_io import map_metadata

    scene = mrml_scene(scene)
    provenance = fit.provenance()
    names = _quantity_names(fit.quantity)
    arrays = {"r2star": fit.r2star, "t2star": fit.t2star, "s0": fit.s0, "quality": fit.quality,
              "status": fit.status}
    if "pdff" in getattr(fit, "maps", {}):
        arrays["pdff"] = fit.maps["pdff"]
    matrix = slicer.util.vtkMatrixFromArray(image.ijk_to_ras)
    transform = desc.primary.GetParentTransformNode() if hasattr(desc.primary, "GetParentTransformNode") else None
    nodes = {}
    for key, array in arrays.items():
        suffix, class_name = MAP_OUTPUTS[key]
        suffix = names.get(key, suffix)
        node = _get_or_create(scene, desc.primary, key, class_name, f"{desc.name} {suffix}", reuse)
        dtype = np.uint8 if key == "status" else np.float32
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array, dtype=dtype))
        node.SetIJKToRASMatrix(matrix)
        if transform is not None:
            node.SetAndObserveTransformNodeID(transform.GetID())
        meta = map_metadata(key, provenance, fit.quantity)
        attrs = {
            "Map": key, "Quantity": meta["quantity"], "Unit": meta["unit"],
            "Description": meta["description"], "Method": fit.method,
            "RequestedMethod": getattr(fit, "requested_method", fit.method),
            "MethodReference": provenance.get("method_reference", ""),
            "EchoTimesMs": [float(t) for t in fit.echo_times_ms],
            "EchoTimeSource": image.metadata.get("echo_time_source", ""),
            "FieldStrengthT": "" if image.field_strength_t is None else f"{image.field_strength_t:g}",
            "NoiseSigma": "" if fit.noise_sigma is None else f"{fit.noise_sigma:g}",
            "NoiseSource": fit.noise_source, "Software": f"IronMapping {__version__}",
            "Version": __version__, "ResearchUse": RESEARCH_USE_STATEMENT,
            "Warnings": list(getattr(fit, "warnings", [])),
            "Provenance": provenance,
        }
        if key == "status":
            attrs["StatusCodes"] = meta.get("status_codes", {})
        attrs.update(extra_attributes or {})
        _set_attributes(node, attrs)
        _display_map(scene, node, key, np.asarray(array), fit.quantity)
        nodes[key] = node
    _place_in_hierarchy(scene, desc.primary, nodes.values())
    return nodes


def _display_map(scene, node, key, array, quantity):
    slicer = _slicer()
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is None:
        return
    names = _quantity_names(quantity)
    if key == "status":
        colours, labels = status_colours()
        table = _colour_table(scene, "status", "IronMapping fit status", colours, labels)
        display.SetAndObserveColorNodeID(table.GetID())
        return
    if key in ("r2star", "t2star"):
        table = _colour_table(scene, key, f"IronMapping {names[key]}", iron_colours(reverse=key == "t2star"))
        display.SetAndObserveColorNodeID(table.GetID())
        lo, hi = _robust_range(array, 1.0, 99.0, floor=0.0)
        if key == "t2star":
            lo = 0.0
    elif key == "pdff":
        lo, hi = 0.0, 100.0
        grey = scene.GetNodeByID("vtkMRMLColorTableNodeGrey")
        if grey is not None:
            display.SetAndObserveColorNodeID(grey.GetID())
    elif key == "quality":
        lo, hi = 0.0, 1.0
        grey = scene.GetNodeByID("vtkMRMLColorTableNodeGrey")
        if grey is not None:
            display.SetAndObserveColorNodeID(grey.GetID())
    else:
        lo, hi = _robust_range(array, 0.5, 99.5, floor=0.0)
        grey = scene.GetNodeByID("vtkMRMLColorTableNodeGrey")
        if grey is not None:
            display.SetAndObserveColorNodeID(grey.GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(lo, hi)
    if key == "r2star" and hasattr(slicer, "vtkSlicerColorLogic"):
        legend = None
        for i in range(node.GetNumberOfDisplayNodes()):
            if node.GetNthDisplayNode(i) is not None and node.GetNthDisplayNode(i).IsA("vtkMRMLColorLegendDisplayNode"):
                legend = node.GetNthDisplayNode(i)
        if legend is None:
            try:
                legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(node)
            except Exception:  # legends are a convenience; an old Slicer may lack them
                legend = None
        if legend is not None:
            legend.SetTitleText(f"{names['r2star']} (1/s)")
            legend.SetLabelFormat("%.0f")


def _place_in_hierarchy(scene, input_node, nodes) -> None:
    """Put outputs beside the input in the subject hierarchy (same study), when there is one."""
    slicer = _slicer()
    sh_class = getattr(slicer, "vtkMRMLSubjectHierarchyNode", None)
    if sh_class is None:
        return
    try:
        sh = sh_class.GetSubjectHierarchyNode(scene)
        if sh is None:
            return
        input_item = sh.GetItemByDataNode(input_node)
        if not input_item:
            return
        parent = sh.GetItemParent(input_item)
        if not parent or parent == sh.GetSceneItemID():
            return
        for node in nodes:
            item = sh.GetItemByDataNode(node)
            if item and sh.GetItemParent(item) != parent:
                sh.SetItemParent(item, parent)
    except Exception:  # placement is cosmetic
        return


# --------------------------------------------------------------------------- tables

_UNIT_IN_NAME = re.compile(r"\(([^()]*)\)\s*$")


def write_table(desc: InputDescription, rows: list[dict], attributes: dict | None = None,
                key: str = "table", title: str = "iron statistics", reuse: bool = True,
                descriptions: dict | None = None, scene=None):
    """Create or update a table node from row dicts (units in the column names).

    Columns that are quantities of :mod:`IronMapping.quantities` get its unit label, UCUM unit
    code (column properties ``unitCode``/``unitCodingScheme``) and description; the values
    are shown as given (``regions_table`` has rounded them to their display precision).
    """
    import vtk

    from .quantities import find as find_quantity

    scene = mrml_scene(scene)
    node = _get_or_create(scene, desc.primary, key, "vtkMRMLTableNode", f"{desc.name} {title}", reuse)
    columns = []
    for row in rows:
        for name in row:
            if name not in columns:
                columns.append(name)
    table = node.GetTable()
    was = node.StartModify()
    node.RemoveAllColumns()
    for name in columns:
        values = [row.get(name) for row in rows]
        kinds = {type(v) for v in values if v is not None}
        numeric = kinds and all(issubclass(k, (int, float, np.integer, np.floating)) and not issubclass(k, bool)
                                for k in kinds)
        integral = numeric and all(isinstance(v, (int, np.integer)) for v in values)
        if integral:
            array = vtk.vtkIntArray()
            for v in values:
                array.InsertNextValue(int(v))
        elif numeric:
            array = vtk.vtkDoubleArray()
            for v in values:
                array.InsertNextValue(np.nan if v is None else float(v))
        else:
            array = vtk.vtkStringArray()
            for v in values:
                array.InsertNextValue(_cell_text(v))
        array.SetName(name)
        table.AddColumn(array)
        quantity = find_quantity(name)
        match = _UNIT_IN_NAME.search(name)
        if quantity is not None and quantity.unit:
            node.SetColumnUnitLabel(name, quantity.unit)
        elif match:
            node.SetColumnUnitLabel(name, match.group(1))
        if quantity is not None and quantity.ucum:
            node.SetColumnProperty(name, "unitCode", quantity.ucum)
            node.SetColumnProperty(name, "unitCodingScheme", "UCUM")
        if descriptions and name in descriptions:
            node.SetColumnDescription(name, descriptions[name])
        elif quantity is not None and quantity.description:
            node.SetColumnDescription(name, quantity.description)
    node.SetUseColumnTitleAsColumnHeader(True) if hasattr(node, "SetUseColumnTitleAsColumnHeader") else None
    table.Modified()
    node.EndModify(was)
    node.Modified()
    _set_attributes(node, dict(attributes or {}))
    _place_in_hierarchy(scene, desc.primary, [node])
    return node


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=_json_default)
    return str(value)


def table_rows(table_node) -> list[dict]:
    """Rows of a table node as dicts (numbers as float, NaN for empty numeric cells)."""
    table = table_node.GetTable()
    names = [table.GetColumn(c).GetName() for c in range(table.GetNumberOfColumns())]
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for c, name in enumerate(names):
            column = table.GetColumn(c)
            if column.IsA("vtkIntArray"):
                row[name] = int(column.GetValue(r))
            elif column.IsA("vtkDataArray"):
                row[name] = float(column.GetTuple1(r))
            else:
                row[name] = column.GetValue(r)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- plots

def write_plot(desc: InputDescription, echo_times_ms, curves: list[dict], fit_times_ms,
               quantity: str = "T2*", reuse: bool = True, scene=None):
    """Plot each region's mean signal (markers) and fitted curve (line) against echo time.

    curves: [{"name", "mean" [n_echoes], "fit" [len(fit_times_ms)], "r2star"}]. Returns the
    plot chart node; data live in the table node "<input> decay curves".
    """
    slicer = _slicer()
    import vtk

    scene = mrml_scene(scene)
    names = _quantity_names(quantity)
    data = _get_or_create(scene, desc.primary, "plot-data", "vtkMRMLTableNode",
                          f"{desc.name} decay curves", reuse)
    te = np.asarray(echo_times_ms, dtype=float)
    tf = np.asarray(fit_times_ms, dtype=float)
    n_rows = max(te.size, tf.size)
    data.RemoveAllColumns()
    table = data.GetTable()

    def add_column(name, values):
        array = vtk.vtkDoubleArray()
        array.SetName(name)
        padded = np.full(n_rows, np.nan)
        padded[:len(values)] = values
        for v in padded:
            array.InsertNextValue(float(v))
        table.AddColumn(array)
        return name

    te_col = add_column("echo time (ms)", te)
    tf_col = add_column("fit echo time (ms)", tf)
    data.SetColumnUnitLabel(te_col, "ms")
    data.SetColumnUnitLabel(tf_col, "ms")
    table.Modified()
    _set_attributes(data, {"Quantity": "mean signal", "Unit": "a.u."})

    chart = _get_or_create(scene, desc.primary, "plot", "vtkMRMLPlotChartNode",
                           f"{desc.name} signal decay", reuse)
    chart.SetTitle(f"{desc.name}: mean signal and {names['r2star']} fit per region")
    chart.SetXAxisTitle("echo time (ms)")
    chart.SetYAxisTitle("mean signal (a.u.)")
    _set_attributes(chart, {"EchoTimesMs": [float(t) for t in te], "Software": f"IronMapping {__version__}"})

    wanted = set()
    palette = [(0.85, 0.1, 0.1), (0.1, 0.45, 0.85), (0.1, 0.6, 0.2), (0.8, 0.5, 0.0), (0.5, 0.2, 0.7),
               (0.0, 0.6, 0.6), (0.6, 0.4, 0.2), (0.9, 0.3, 0.6), (0.4, 0.4, 0.4)]
    for index, curve in enumerate(curves):
        colour = palette[index % len(palette)]
        mean_col = add_column(f"{curve['name']} mean signal (a.u.)", curve["mean"])
        fit_col = add_column(f"{curve['name']} fit (a.u.)", curve["fit"])
        r2 = curve.get("r2star")
        label_fit = f"{curve['name']} fit" + (f" ({names['r2star']} {r2:.1f} 1/s)" if r2 is not None and np.isfinite(r2) else "")
        for kind, column, x_col, label in (("points", mean_col, te_col, f"{curve['name']} mean"),
                                           ("line", fit_col, tf_col, label_fit)):
            series_key = f"series:{kind}:{curve['name']}"
            wanted.add(series_key)
            series = _get_or_create(scene, desc.primary, series_key, "vtkMRMLPlotSeriesNode", label, reuse)
            series.SetName(label)
            series.SetAndObserveTableNodeID(data.GetID())
            series.SetXColumnName(x_col)
            series.SetYColumnName(column)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetColor(*colour)
            if kind == "points":
                series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleNone)
                series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
            else:
                series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleSolid)
                series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
            if not chart.HasPlotSeriesNodeID(series.GetID()):
                chart.AddAndObservePlotSeriesNodeID(series.GetID())
    table.Modified()
    # Series of regions no longer analysed are IronMapping's own outputs: remove them.
    for key, node in outputs_of(desc.primary, scene).items():
        if key.startswith("series:") and key not in wanted:
            chart.RemovePlotSeriesNodeID(node.GetID())
            scene.RemoveNode(node)
    _place_in_hierarchy(scene, desc.primary, [data, chart])
    return chart


def remove_outputs(input_node, keys: Iterable[str], scene=None) -> None:
    """Remove IronMapping outputs ``keys`` of ``input_node`` (e.g. a PDFF map no longer made)."""
    scene = mrml_scene(scene)
    current = outputs_of(input_node, scene)
    for key in keys:
        node = current.get(key)
        if node is not None:
            for i in range(node.GetNumberOfDisplayNodes() if hasattr(node, "GetNumberOfDisplayNodes") else 0):
                display = node.GetNthDisplayNode(i)
                if display is not None:
                    scene.RemoveNode(display)
            scene.RemoveNode(node)


# --------------------------------------------------------------------------- sample data

def add_multiecho_sequence(image: MultiEchoImage, name: str, scene=None, with_browser: bool = True):
    """Put a MultiEchoImage in the scene the way MultiVolumeImporter does: a volume sequence
    indexed by frame number with MultiVolume.* attributes (echo times in FrameLabels), plus a
    sequence browser and proxy volume. Returns (sequence node, proxy volume or None)."""
    slicer = _slicer()
    scene = mrml_scene(scene)
    with SceneTransaction(scene):
        sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
        sequence.SetIndexName("frame")
        sequence.SetIndexUnit("")
        matrix = slicer.util.vtkMatrixFromArray(image.ijk_to_ras)
        for e in range(image.n_echoes):
            frame = slicer.vtkMRMLScalarVolumeNode()
            frame.SetName(f"{name} echo {e + 1}")
            slicer.util.updateVolumeFromArray(frame, np.ascontiguousarray(image.signal[e]))
            frame.SetIJKToRASMatrix(matrix)
            sequence.SetDataNodeAtValue(frame, str(e))
        sequence.SetAttribute("MultiVolume.FrameLabels", ",".join(f"{t:g}" for t in image.echo_times_ms))
        sequence.SetAttribute("MultiVolume.NumberOfFrames", str(image.n_echoes))
        sequence.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagName", "EchoTime")
        sequence.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagUnits", "ms")
        if image.field_strength_t is not None:
            sequence.SetAttribute(ATTRIBUTE_PREFIX + "FieldStrengthT", f"{image.field_strength_t:g}")
        proxy = None
        if with_browser and scene.IsNodeClassRegistered("vtkMRMLSequenceBrowserNode"):
            browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{name} browser")
            browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
            browser.SetSelectedItemNumber(0)
            proxy = _make_proxy(scene, browser, sequence)
    return sequence, proxy


def _make_proxy(scene, browser, sequence):
    """Proxy volume of the first echo (done by the Sequences logic in the application)."""
    slicer = _slicer()
    modules = getattr(slicer, "modules", None)
    app_logic = getattr(getattr(modules, "sequences", None), "logic", None) if modules is not None else None
    if app_logic is not None:  # inside Slicer: the Sequences module's own logic
        app_logic().UpdateProxyNodesFromSequences(browser)
        return browser.GetProxyNode(sequence)
    logic_class = getattr(slicer, "vtkSlicerSequencesLogic", None)
    if logic_class is not None:
        logic = logic_class()
        logic.SetMRMLScene(scene)
        logic.UpdateProxyNodesFromSequences(browser)
        proxy = browser.GetProxyNode(sequence)
        logic.SetMRMLScene(None)
        if proxy is not None:
            return proxy
    return None


def add_label_segmentation(labels: np.ndarray, label_names: dict, ijk_to_ras, name: str,
                           scene=None):
    """A segmentation node with one segment per label value (named from ``label_names``)."""
    slicer = _slicer()
    scene = mrml_scene(scene)
    with SceneTransaction(scene) as transaction:
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        segmentation.CreateDefaultDisplayNodes()
        before = _node_ids(scene)
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{name} labels")
        slicer.util.updateVolumeFromArray(labelmap, np.ascontiguousarray(labels, dtype=np.uint8))
        labelmap.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
        if not ok:
            raise InputError(f"Could not make segments from the label map '{name}'.")
        seg = segmentation.GetSegmentation()
        values = [int(v) for v in np.unique(labels) if v]
        for i, value in enumerate(values):
            segment = seg.GetNthSegment(i)
            if segment is not None and value in label_names:
                segment.SetName(label_names[value])
        for node_id in _node_ids(scene) - before:
            node = scene.GetNodeByID(node_id)
            if node is not None and not node.IsA("vtkMRMLSubjectHierarchyNode"):
                scene.RemoveNode(node)
        _ = transaction
    return segmentation


# --------------------------------------------------------------------------- Segment Statistics

def volume_array(node) -> np.ndarray:
    """Voxels [k, j, i] of a volume node (a copy)."""
    return np.array(_slicer().util.arrayFromVolume(node))


def volume_geometry(node) -> tuple[tuple, np.ndarray]:
    """(shape (k, j, i), ijk_to_ras 4x4) of a volume node."""
    return tuple(reversed(node.GetImageData().GetDimensions())), _ijk_to_ras(node)


def r2star_map_for(volume_node, scene=None):
    """The IronMapping R2* map that belongs to ``volume_node``: the node itself when it is one,
    the R2* map of the same run when it is another output (T2*, S0, ...), or the R2* map computed
    from it when it is an input (or a sequence's proxy volume). None when there is none."""
    scene = mrml_scene(scene)
    if volume_node is None:
        return None
    key = volume_node.GetAttribute(ATTRIBUTE_PREFIX + "Output")
    if key == "r2star":
        return volume_node
    if key:
        source = volume_node.GetNodeReference(INPUT_REFERENCE_ROLE)
        return find_output(source, "r2star", scene) if source is not None else None
    found = find_output(volume_node, "r2star", scene)
    if found is None:
        sequence, _ = _sequence_of_proxy(volume_node, scene)
        found = find_output(sequence, "r2star", scene) if sequence is not None else None
    return found


def node_by_id(node_id: str, scene=None):
    return mrml_scene(scene).GetNodeByID(node_id) if node_id else None


# --------------------------------------------------------------------------- focal findings

FOCAL_COLOURS = {
    "iron-sparing": (0.30, 0.75, 1.00),            # light blue: less iron than the organ
    "iron-dense": (0.85, 0.12, 0.10),              # dark red: more iron than the organ
    "iron-dense diamagnetic": (0.95, 0.95, 0.65),  # pale yellow: dense, field shift as calcium
}


def focal_colour(finding: dict) -> tuple:
    """Segment colour of a focal finding, by kind (and by field-shift sign for dense ones)."""
    shift = finding.get("field_shift") or {}
    if finding.get("kind") == "iron-dense" and shift.get("sign") == "diamagnetic":
        return FOCAL_COLOURS["iron-dense diamagnetic"]
    return FOCAL_COLOURS.get(finding.get("kind"), (0.6, 0.6, 0.6))


def focal_segment_name(finding: dict) -> str:
    volume = finding.get("volume_ml")
    size = f"{volume:.1f} mL" if volume is not None else f"{finding.get('n_voxels')} voxels"
    return f"{finding['id']} {finding['kind']} {finding['region']} {size}"


def write_focal_findings(desc: InputDescription, image: MultiEchoImage, findings: list,
                         attributes: dict | None = None, reuse: bool = True, scene=None) -> dict:
    """The "<input> focal findings" segmentation (one segment per finding, named and coloured
    by kind) and its "<input> focal findings table". Re-running replaces the segments of the
    same node. Returns {"focal_segmentation": node, "focal_table": node}."""
    from .focal import findings_label_map, findings_table

    slicer = _slicer()
    scene = mrml_scene(scene)
    node = _get_or_create(scene, desc.primary, "focal_findings", "vtkMRMLSegmentationNode",
                          f"{desc.name} focal findings", reuse)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    segmentation = node.GetSegmentation()
    segmentation.RemoveAllSegments()
    if findings:
        labels = findings_label_map(findings, image.shape)
        before = _node_ids(scene)
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{desc.name} focal labels")
        slicer.util.updateVolumeFromArray(labelmap, np.ascontiguousarray(labels))
        labelmap.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(image.ijk_to_ras))
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, node)
        for node_id in _node_ids(scene) - before:
            temporary = scene.GetNodeByID(node_id)
            if temporary is not None and not temporary.IsA("vtkMRMLSubjectHierarchyNode"):
                scene.RemoveNode(temporary)
        if not ok:
            raise InputError(f"Could not make segments of the focal findings of {desc.name!r}.")
        by_value = {int(f.get("label_value", n)): f for n, f in enumerate(findings, start=1)}
        for n in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(n)
            finding = by_value.get(int(segment.GetLabelValue()))
            if finding is None:
                continue
            segment.SetName(focal_segment_name(finding))
            segment.SetColor(*focal_colour(finding))
            segment.SetTag(ATTRIBUTE_PREFIX + "FocalFinding", finding["id"])
            segment.SetTag(ATTRIBUTE_PREFIX + "FocalKind", finding["kind"])
            segment.SetTag(ATTRIBUTE_PREFIX + "Reading", finding.get("reading") or "")
    text = (f"{len(findings)} focal finding(s)" if findings else
            "No focal finding: no area departs from its organ's background beyond the uncertainty")
    _set_attributes(node, {"Quantity": "focal findings", "Findings": str(len(findings)),
                           "Text": text, "Software": f"IronMapping {__version__}",
                           "ResearchUse": RESEARCH_USE_STATEMENT})
    table = write_table(desc, findings_table(findings), dict(attributes or {}, Text=text),
                        key="focal_table", title="focal findings table", reuse=reuse, scene=scene)
    _place_in_hierarchy(scene, desc.primary, [node])
    return {"focal_segmentation": node, "focal_table": table}
