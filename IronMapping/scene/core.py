"""Nodes of the MRML scene: the scene itself, undo on failure, IronMapping's output nodes.

Outputs are found again through a node reference to the input (:data:`INPUT_REFERENCE_ROLE`)
plus the ``IronMapping.Output`` attribute, so re-running updates them in place.
"""

from __future__ import annotations

import json
from typing import Iterable

import numpy as np

from ..errors import InputError
from ..fileio import json_safe


ATTRIBUTE_PREFIX = "IronMapping."
INPUT_REFERENCE_ROLE = "ironMappingInput"
"""Node reference role from every output node to the input node it was computed from."""


def _slicer():
    import slicer  # noqa: PLC0415 - Slicer or slicer-core; imported late so the library loads without it

    return slicer


def mrml_scene(scene=None):
    """The given scene, else ``slicer.mrmlScene``.

    Parameters
    ----------
    scene : vtkMRMLScene, optional

    Returns
    -------
    vtkMRMLScene

    Raises
    ------
    InputError
        When there is none.
    """
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

    Parameters
    ----------
    scene : vtkMRMLScene
    """

    def __init__(self, scene):
        self.scene = scene
        self._before: set[str] = set()

    def __enter__(self):
        self._before = _node_ids(self.scene)
        return self

    def rollback(self) -> None:
        """Remove every node added since the transaction began (display and storage nodes first)."""
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
    """Nodes of a class (and subclasses) in scene order.

    Parameters
    ----------
    scene : vtkMRMLScene
    class_name : str
        E.g. "vtkMRMLScalarVolumeNode".

    Returns
    -------
    list of vtkMRMLNode
    """
    collection = scene.GetNodesByClass(class_name)
    collection.UnRegister(None)  # the C++ call returns a new reference that Python also holds
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


def _ijk_to_ras(node) -> np.ndarray:
    slicer = _slicer()
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix).copy()


def find_output(input_node, key: str, scene=None, class_name: str = "vtkMRMLNode"):
    """The output node ``key`` previously made from an input node.

    Parameters
    ----------
    input_node : vtkMRMLNode
    key : str
        Output key ("r2star", "table", ...; the ``IronMapping.Output`` attribute).
    scene : vtkMRMLScene, optional
    class_name : str
        Class the output must be.

    Returns
    -------
    vtkMRMLNode or None
    """
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
    """All IronMapping outputs of an input node.

    Parameters
    ----------
    input_node : vtkMRMLNode
    scene : vtkMRMLScene, optional

    Returns
    -------
    dict of str to vtkMRMLNode
        By output key.
    """
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
            text = json.dumps(json_safe(value))
        else:
            text = str(value)
        node.SetAttribute(ATTRIBUTE_PREFIX + key, text)


def output_attributes(node) -> dict:
    """The ``IronMapping.*`` attributes of an output node.

    Parameters
    ----------
    node : vtkMRMLNode

    Returns
    -------
    dict of str to str
        Attribute name without the prefix -> value.
    """
    result = {}
    for name in node.GetAttributeNames() or ():
        if name.startswith(ATTRIBUTE_PREFIX):
            result[name[len(ATTRIBUTE_PREFIX):]] = node.GetAttribute(name)
    return result


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


def remove_outputs(input_node, keys: Iterable[str], scene=None) -> None:
    """Remove IronMapping outputs of an input node (e.g. a PDFF map no longer made).

    Parameters
    ----------
    input_node : vtkMRMLNode
    keys : iterable of str
        Output keys.
    scene : vtkMRMLScene, optional
    """
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


def volume_array(node) -> np.ndarray:
    """Voxels of a volume node (a copy).

    Parameters
    ----------
    node : vtkMRMLVolumeNode

    Returns
    -------
    ndarray, shape (k, j, i)
    """
    return np.array(_slicer().util.arrayFromVolume(node))


def volume_geometry(node) -> tuple[tuple, np.ndarray]:
    """Shape and geometry of a volume node.

    Parameters
    ----------
    node : vtkMRMLVolumeNode

    Returns
    -------
    shape : tuple of int
        (k, j, i).
    ijk_to_ras : ndarray, shape (4, 4)
        Voxel index to RAS mm.
    """
    return tuple(reversed(node.GetImageData().GetDimensions())), _ijk_to_ras(node)


def node_by_id(node_id: str, scene=None):
    """A node of the scene by its ID.

    Parameters
    ----------
    node_id : str
        Empty gives None.
    scene : vtkMRMLScene, optional

    Returns
    -------
    vtkMRMLNode or None
    """
    return mrml_scene(scene).GetNodeByID(node_id) if node_id else None
