"""The digital phantom as Slicer sample data, generated on this computer (nothing is downloaded).

    >>> from IronMapping.sample_data import load_phantom
    >>> sequence, segmentation, phantom = load_phantom()      # into slicer.mrmlScene
    >>> phantom.region_r2star                                 # truth per organ, 1/s

Inside Slicer, :func:`register` adds the presets to the Sample Data module (category "Iron
Mapping"), so that the button and ``SampleData.downloadSample("IronPhantomNeonatalHaemochromatosis")``
both work. Sample Data (5.8 and 5.10, Modules/Scripted/SampleData/SampleData.py) loads a
source by "downloading" each URI into its cache and opening the file with the reader of the
source's file type (``downloadFromSource`` -> ``downloadFileIntoCache`` -> ``loadNode``); a
``customDownloader`` is used by the button only. So each preset is a small recipe file shipped
in Resources/SampleData (``*.ironphantom``, JSON), given by a ``file:`` URI, and read by
IronMapping.py's ``IronMappingFileReader``, which generates the phantom from the recipe with
:func:`load_recipe`. Nothing leaves the computer.

The data arrive as MultiVolumeImporter would load a multi-echo DICOM series: a volume sequence
indexed by frame number with the echo times in ``MultiVolume.FrameLabels``, plus a segmentation
with one segment per organ.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from .errors import InputError
from .phantom import PRESETS, make_phantom

CATEGORY = "Iron Mapping"
#: Sample name shown in Sample Data -> phantom preset.
SAMPLES = {
    "IronPhantomNeonatalHaemochromatosis": "neonatal-haemochromatosis",
    "IronPhantomTransfusional": "transfusional",
    "IronPhantomNormal": "normal",
}

#: The Slicer file type (IO reader) of phantom recipes, and their file name extension.
FILE_TYPE = "IronMappingPhantomRecipe"
RECIPE_EXTENSION = ".ironphantom"
RECIPE_FORMAT = "IronMapping phantom recipe"

log = logging.getLogger(__name__)

_RESOURCES = Path(__file__).resolve().parent.parent / "Resources"


def _thumbnail() -> str:
    return str(_RESOURCES / "Icons" / "IronMapping.png")


def recipe_path(sample: str) -> Path:
    """The shipped recipe file of a sample name (Resources/SampleData/<sample>.ironphantom).

    Parameters
    ----------
    sample : str
        Sample name, a key of ``SAMPLES``.

    Returns
    -------
    Path
    """
    return _RESOURCES / "SampleData" / (sample + RECIPE_EXTENSION)


def read_recipe(path) -> dict:
    """The phantom recipe in a file.

    Parameters
    ----------
    path : str or Path
        JSON with ``"format": RECIPE_FORMAT``.

    Returns
    -------
    dict
        {"preset": str, "options": dict for make_phantom} (lists as tuples).

    Raises
    ------
    InputError
        When the file is not a recipe, names an unknown preset or an option that
        :func:`IronMapping.phantom.make_phantom` does not take.
    """
    import inspect

    try:
        with open(path, encoding="utf-8") as f:
            recipe = json.load(f)
    except (OSError, ValueError) as exc:
        raise InputError(f"'{path}' is not an Iron Mapping phantom recipe ({exc}).") from None
    if not isinstance(recipe, dict) or recipe.get("format") != RECIPE_FORMAT:
        raise InputError(f"'{path}' is not an Iron Mapping phantom recipe (it must be JSON with "
                         f'"format": "{RECIPE_FORMAT}").')
    preset = recipe.get("preset")
    if preset not in PRESETS:
        raise InputError(f"'{path}' names the phantom preset {preset!r}; choose one of {sorted(PRESETS)}.")
    options = recipe.get("options") or {}
    allowed = set(inspect.signature(make_phantom).parameters) - {"preset"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InputError(f"'{path}': unknown phantom option(s) {unknown}; allowed: {sorted(allowed)}.")
    return {"preset": preset, "options": {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}}


def load_recipe(path, name: str | None = None, scene=None):
    """Generate the phantom a recipe file describes and add it to the scene.

    Parameters
    ----------
    path : str or Path
        The recipe (see :func:`read_recipe`).
    name : str, optional
        Node name (default "IronPhantom <preset>").
    scene : vtkMRMLScene, optional
        Default: Slicer's scene.

    Returns
    -------
    (vtkMRMLSequenceNode, vtkMRMLSegmentationNode, Phantom)
        As :func:`load_phantom`.

    Raises
    ------
    InputError
        As :func:`read_recipe`.
    """
    recipe = read_recipe(path)
    sequence, segmentation, phantom = load_phantom(recipe["preset"], name=name, scene=scene, **recipe["options"])
    log.info("IronMapping phantom '%s' generated: truth R2* %s 1/s", recipe["preset"],
             {k: round(v, 1) for k, v in phantom.region_r2star.items()})
    return sequence, segmentation, phantom


def load_phantom(preset: str = "neonatal-haemochromatosis", name: str | None = None, scene=None,
                 **phantom_options):
    """Generate the phantom and add it to the scene (all nodes or none).

    Parameters
    ----------
    preset : str
        As in :func:`IronMapping.phantom.make_phantom`.
    name : str, optional
        Node name (default "IronPhantom <preset>").
    scene : vtkMRMLScene, optional
        Default: Slicer's scene.
    **phantom_options
        Passed to :func:`IronMapping.phantom.make_phantom` (shape, snr, coils,
        field_strength_t, seed, ...).

    Returns
    -------
    (vtkMRMLSequenceNode, vtkMRMLSegmentationNode, Phantom)
        The echoes, the organ segmentation "<name> organs" and the phantom with its truth.
    """
    from . import scene as mrml

    phantom = make_phantom(preset, **phantom_options)
    name = name or f"IronPhantom {preset}"
    scene = mrml.mrml_scene(scene)
    with mrml.SceneTransaction(scene):  # all or nothing
        sequence, _proxy = mrml.add_multiecho_sequence(phantom.image, name, scene=scene)
        segmentation = mrml.add_label_segmentation(phantom.labels, phantom.label_names,
                                                   phantom.image.ijk_to_ras, f"{name} organs", scene=scene)
    return sequence, segmentation, phantom


def sample_sources() -> list[dict]:
    """The keyword arguments :func:`register` gives ``registerCustomSampleDataSource``, one dict
    per preset: a ``file:`` URI of the shipped recipe with its SHA256 checksum (so an outdated
    copy in Slicer's cache is replaced), the node name and the recipe file type."""
    sources = []
    for sample, preset in SAMPLES.items():
        path = recipe_path(sample)
        if preset not in PRESETS or not path.is_file():
            continue
        sources.append(dict(
            category=CATEGORY,
            sampleName=sample,
            thumbnailFileName=_thumbnail(),
            uris=path.as_uri(),
            fileNames=path.name,
            nodeNames=sample,
            checksums="SHA256:" + hashlib.sha256(path.read_bytes()).hexdigest(),
            loadFileTypes=FILE_TYPE,
        ))
    return sources


def register() -> bool:
    """Add the phantom presets to Slicer's Sample Data module; False when it is not available."""
    try:
        import SampleData
    except ImportError:
        return False
    for source in sample_sources():
        SampleData.SampleDataLogic.registerCustomSampleDataSource(**source)
    return True


def echo_volumes(sequence_node, scene=None) -> list:
    """The echoes of a volume sequence as separate scalar volumes "<sequence> echo N".

    This is how a series looks when its echoes are loaded one by one: no echo times are
    attached (the user types them in). Used by the self-test's echo-volume path.

    Parameters
    ----------
    sequence_node : vtkMRMLSequenceNode
    scene : vtkMRMLScene, optional
        Default: Slicer's scene.

    Returns
    -------
    list of vtkMRMLScalarVolumeNode
    """
    from . import scene as mrml

    slicer = mrml._slicer()
    scene = mrml.mrml_scene(scene)
    volumes = []
    with mrml.SceneTransaction(scene):
        for n in range(sequence_node.GetNumberOfDataNodes()):
            echo = sequence_node.GetNthDataNode(n)
            _shape, ijk_to_ras = mrml.volume_geometry(echo)
            node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{sequence_node.GetName()} echo {n + 1}")
            slicer.util.updateVolumeFromArray(node, mrml.volume_array(echo))
            node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
            node.CreateDefaultDisplayNodes()
            volumes.append(node)
    return volumes
