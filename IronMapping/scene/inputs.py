"""Reading inputs from the scene: volume sequences, MultiVolumes and echo volumes to a
:class:`~IronMapping.image.MultiEchoImage`, with echo times and field strength from the node
attributes or Slicer's DICOM database; putting a MultiEchoImage in the scene (sample data)."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import EchoTimeError, InputError
from ..image import MultiEchoImage
from .core import ATTRIBUTE_PREFIX, SceneTransaction, _ijk_to_ras, _slicer, mrml_scene, nodes_by_class


ECHO_TIME_TAG = "0018,0081"
FIELD_STRENGTH_TAG = "0018,0087"
SCANNING_SEQUENCE_TAG = "0018,0020"
MANUFACTURER_TAG = "0008,0070"


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
    """A tag of a DICOM instance from Slicer's DICOM database.

    Parameters
    ----------
    uid : str
        SOPInstanceUID.
    tag : str
        "gggg,eeee".

    Returns
    -------
    str
        "" when there is no database or no value.
    """
    return _database_value("instanceValue", uid, tag)


def _first_number(text: str) -> float | None:
    match = re.search(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", text or "")
    return float(match.group(0)) if match else None


def _instance_uids(node) -> list[str]:
    value = node.GetAttribute("DICOM.instanceUIDs") if node is not None else None
    return value.split() if value else []


@dataclass
class InputDescription:
    """What was found about an input before reading its voxels.

    Attributes
    ----------
    nodes : list of vtkMRMLNode
        The input node(s) as given (one node, or the list of echo volumes).
    primary : vtkMRMLNode
        The node that names the outputs and is referenced by them.
    display : vtkMRMLScalarVolumeNode or None
        A scalar volume in the scene showing the first echo (background of the maps).
    echo_nodes : list of vtkMRMLVolumeNode
        One volume node per echo (may live inside a sequence node).
    kind : str
        "sequence", "multivolume" or "volumes".
    frame_component : bool
        The echoes are the scalar components (frames) of one MultiVolume node.
    echo_times_ms : ndarray, shape (n_echoes,), or None
        Echo times in ms found in the metadata, None when not found.
    echo_time_source : str
        Where they came from.
    field_strength_t : float or None
        In T, from DICOM (0018,0087), None when unknown.
    quantity : str
        "T2*" (gradient echo) or "T2" (spin echo, from DICOM ScanningSequence).
    metadata : dict
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
        """Name of the primary node (its ID when unnamed)."""
        return self.primary.GetName() or self.primary.GetID()

    @property
    def n_echoes(self) -> int:
        """Number of echoes."""
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
    """A tag of a DICOM file through Slicer's DICOM database.

    Parameters
    ----------
    path : str
    tag : str
        "gggg,eeee".

    Returns
    -------
    str
        "" when there is no database or no value.
    """
    return _database_value("fileValue", path, tag)


def _dicom_facts(uids: Sequence[str], files: Sequence[str] = ()) -> dict:
    """Field strength, scanning sequence and manufacturer of the first instance (by UID, else
    by file path as MultiVolumeImporter records them in MultiVolume.FrameFileList)."""
    from ..io.checks import field_strength_from

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
    """Find the echo volumes, echo times, field strength and quantity of an input.

    No voxels are read.

    Parameters
    ----------
    input_nodes : vtkMRMLNode or list of vtkMRMLScalarVolumeNode
        A volume sequence, MultiVolume or proxy volume of a sequence, or one scalar volume
        per echo.
    scene : vtkMRMLScene, optional

    Returns
    -------
    InputDescription

    Raises
    ------
    InputError
        For no input, a node that is not a multi-echo input, or volumes without image data.
    EchoTimeError
        For a single volume.
    """
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
        from ..io.checks import quantity_from_sequence

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


def read_multiecho(input_nodes, echo_times_ms=None, field_strength_t=None, scene=None,
                   description: InputDescription | None = None) -> tuple[MultiEchoImage, InputDescription]:
    """Read a multi-echo input from the scene into a MultiEchoImage.

    Echoes are checked and sorted by :func:`IronMapping.io.checks.stack_echoes`, the same rules
    as for files. The scene is never changed.

    Parameters
    ----------
    input_nodes : vtkMRMLNode or list of vtkMRMLScalarVolumeNode
        As in :func:`describe_input`.
    echo_times_ms : sequence of float, optional
        Echo times in ms typed by the user; they override what the metadata says.
    field_strength_t : float, optional
        Field strength in T; likewise overrides the metadata.
    scene : vtkMRMLScene, optional
    description : InputDescription, optional
        From :func:`describe_input`, when already made.

    Returns
    -------
    image : MultiEchoImage
        signal of shape (n_echoes, k, j, i).
    description : InputDescription

    Raises
    ------
    EchoTimeError, GeometryError, InputError
        With advice.
    """
    slicer = _slicer()
    from ..io.checks import stack_echoes

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


def add_multiecho_sequence(image: MultiEchoImage, name: str, scene=None, with_browser: bool = True):
    """Put a MultiEchoImage in the scene the way MultiVolumeImporter does.

    A volume sequence indexed by frame number with MultiVolume.* attributes (echo times in
    FrameLabels), plus a sequence browser and proxy volume.

    Parameters
    ----------
    image : MultiEchoImage
    name : str
        Node name.
    scene : vtkMRMLScene, optional
    with_browser : bool
        Also add the sequence browser and proxy volume.

    Returns
    -------
    sequence : vtkMRMLSequenceNode
    proxy : vtkMRMLScalarVolumeNode or None
    """
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
