"""A real MRML scene for tests (slicer-core), set as ``slicer.mrmlScene`` like in the application.

Registers the logics the application would have (application, colours, subject hierarchy) so
default colour tables exist and outputs can be placed in the hierarchy. Restores the previous
``slicer.mrmlScene`` afterwards.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is needed for MRML tests")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package here is not Slicer's MRML core (pip install slicer-core)",
                allow_module_level=True)

_MISSING = object()


class SceneSetup:
    """A fresh scene with application, colour and subject hierarchy logics."""

    def __init__(self):
        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkMRMLApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.color_logic = slicer.vtkSlicerColorLogic()
        self.color_logic.SetMRMLApplicationLogic(self.app_logic)
        self.color_logic.SetMRMLScene(self.scene)
        self.sh_logic = slicer.vtkSlicerSubjectHierarchyModuleLogic()
        self.sh_logic.SetMRMLScene(self.scene)
        self.sequences_logic = slicer.vtkSlicerSequencesLogic()  # registers sequence browser nodes
        self.sequences_logic.SetMRMLScene(self.scene)

    def close(self):
        self.sequences_logic.SetMRMLScene(None)
        self.sh_logic.SetMRMLScene(None)
        self.color_logic.SetMRMLScene(None)
        self.app_logic.SetMRMLScene(None)
        self.scene.Clear(1)


def install_scene():
    """Make a fresh scene the current ``slicer.mrmlScene``; returns (setup, restore function)."""
    previous = getattr(slicer, "mrmlScene", _MISSING)
    setup = SceneSetup()
    slicer.mrmlScene = setup.scene

    def restore():
        setup.close()
        if previous is _MISSING:
            if hasattr(slicer, "mrmlScene"):
                del slicer.mrmlScene
        else:
            slicer.mrmlScene = previous

    return setup, restore


@pytest.fixture
def mrml_scene():
    """A fresh vtkMRMLScene set as slicer.mrmlScene (restored afterwards)."""
    setup, restore = install_scene()
    try:
        yield setup.scene
    finally:
        restore()


def count_nodes(scene) -> int:
    return scene.GetNumberOfNodes()


def save_and_reload(scene, folder):
    """Save ``scene`` as a Slicer data bundle directory (.mrml + Data/) and load it into a new
    scene (with the same logics). Returns (new setup, path of the .mrml)."""
    os.makedirs(str(folder), exist_ok=True)
    app = slicer.vtkMRMLApplicationLogic()
    app.SetMRMLScene(scene)
    ok = app.SaveSceneToSlicerDataBundleDirectory(str(folder), None)
    app.SetMRMLScene(None)
    assert ok, "Slicer could not save the scene"
    mrml = [f for f in os.listdir(folder) if f.endswith(".mrml")]
    assert len(mrml) == 1, os.listdir(folder)
    setup = SceneSetup()
    setup.scene.SetURL(os.path.join(str(folder), mrml[0]))
    assert setup.scene.Connect() == 1, "Slicer could not load the saved scene"
    return setup, os.path.join(str(folder), mrml[0])


def volume_node_from_array(scene, array, ijk_to_ras, name, class_name="vtkMRMLScalarVolumeNode"):
    node = scene.AddNewNodeByClass(class_name, name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.asarray(ijk_to_ras, float)))
    return node
