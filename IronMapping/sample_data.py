"""The digital phantom as Slicer sample data, generated on this computer (nothing is downloaded).

    >>> from IronMapping.sample_data import load_phantom
    >>> sequence, segmentation, phantom = load_phantom()      # into slicer.mrmlScene
    >>> phantom.region_r2star                                 # truth per organ, 1/s

Inside Slicer, :func:`register` adds the presets to the Sample Data module (category "Iron
Mapping"). The data arrive as MultiVolumeImporter would load a multi-echo DICOM series: a
volume sequence indexed by frame number with the echo times in ``MultiVolume.FrameLabels``,
plus a segmentation with one segment per organ.
"""

from __future__ import annotations

import logging
import os

from .phantom import PRESETS, make_phantom

CATEGORY = "Iron Mapping"
#: Sample name shown in Sample Data -> phantom preset.
SAMPLES = {
    "IronPhantomNeonatalHaemochromatosis": "neonatal-haemochromatosis",
    "IronPhantomTransfusional": "transfusional",
    "IronPhantomNormal": "normal",
}

log = logging.getLogger(__name__)


def _thumbnail() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(here), "Resources", "Icons", "IronMapping.png")


def load_phantom(preset: str = "neonatal-haemochromatosis", name: str | None = None, scene=None,
                 **phantom_options):
    """Generate the phantom and add it to the scene.

    Returns (volume sequence node, segmentation node, Phantom). ``phantom_options`` go to
    :func:`IronMapping.phantom.make_phantom` (shape, snr, coils, field_strength_t, seed, ...).
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


def register() -> bool:
    """Add the phantom presets to Slicer's Sample Data module; False when it is not available."""
    try:
        import SampleData
    except ImportError:
        return False
    logic = SampleData.SampleDataLogic
    if hasattr(logic, "registerCustomSampleDataCategory"):
        logic.registerCustomSampleDataCategory(CATEGORY, title=CATEGORY)
    for sample, preset in SAMPLES.items():
        if preset not in PRESETS:
            continue
        logic.registerCustomSampleDataSource(
            category=CATEGORY,
            sampleName=sample,
            thumbnailFileName=_thumbnail(),
            # Nothing is fetched: the custom downloader generates the phantom when clicked.
            uris=f"ironmapping-phantom:{preset}",
            fileNames=f"{sample}.seq.nrrd",
            nodeNames=sample,
            customDownloader=lambda source, preset=preset: _load_from_sample_data(preset),
        )
    return True


def _load_from_sample_data(preset: str):
    sequence, segmentation, phantom = load_phantom(preset)
    log.info("IronMapping phantom '%s' loaded: truth R2* %s 1/s", preset,
             {k: round(v, 1) for k, v in phantom.region_r2star.items()})
    return [sequence, segmentation]
