"""The phantom through Slicer's Sample Data contract: ``SampleData.downloadSample(name)`` works.

Slicer's SampleData module needs Qt and cannot be imported here. ``SampleDataModel`` below
follows, without Qt, what Modules/Scripted/SampleData/SampleData.py does at v5.8.1 and v5.10.0
(the same in both for these steps) with a source registered by
``SampleDataLogic.registerCustomSampleDataSource``:

- ``downloadSample(name)`` -> ``downloadSamples`` -> ``sourceForSampleName`` -> ``downloadFromSource``;
  the source's ``customDownloader`` is NOT used (only the module's button calls it, and with
  no customDownloader the button calls ``downloadFromSource`` too);
- per URI: ``downloadFileIntoCache`` -> ``downloadFile``: ``urllib.request.urlretrieve(uri,
  cache/fileName)`` unless the file is in the cache; a ``<algo>:<digest>`` checksum is verified
  and a cached copy that does not match is downloaded again;
- then, with a node name, ``loadNode(path, nodeName, loadFileType)``: properties {"fileName",
  "name"} to ``slicer.app.coreIOManager().loadNodes(fileType, ...)``, which runs the reader of
  that file type (for a scripted module, its ``<Module>FileReader`` class with a ``parent``
  whose ``loadedNodes`` the reader sets); the first loaded node is returned.

The reader is the real IronMappingFileReader of IronMapping.py (loaded as Slicer loads it), the
scene a real MRML scene, the "download" a real urlretrieve, restricted to file: URIs so that a
source that would reach the network fails the test.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
import types
import urllib.parse
import urllib.request

import numpy as np
import pytest

from mrml_fixtures import mrml_scene, slicer  # noqa: F401  (skips without slicer-core)
from test_module_loading import MODULE_FILE, clean_modules, load_like_slicer  # noqa: F401

SAMPLE = "IronPhantomNeonatalHaemochromatosis"


class ReaderParent:
    """What qSlicerScriptedFileReader gives its Python reader as ``parent``."""

    def __init__(self):
        self.loadedNodes = []
        self.messages = slicer.vtkMRMLMessageCollection()

    def userMessages(self):
        return self.messages


class SampleDataModel:
    """Slicer's SampleData module for registered sources (see the module docstring)."""

    def __init__(self, cache_dir, readers, scene):
        self.sources = {}  # slicer.modules.sampleDataSources
        self.cache_dir = str(cache_dir)
        self.readers = {reader(ReaderParent()).fileType(): reader for reader in readers}
        self.scene = scene
        self.retrieved = []
        model = self

        class SampleDataLogic:
            @staticmethod
            def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None,
                                               nodeNames=None, customDownloader=None, thumbnailFileName=None,
                                               loadFileTypes=None, loadFiles=None, loadFileProperties={},
                                               checksums=None, loadFileType=None):
                if loadFileType is not None and loadFileTypes is not None:
                    raise ValueError("loadFileType and loadFileTypes cannot be specified at the same time")
                loadFileTypes = loadFileTypes if loadFileTypes is not None else loadFileType
                if isinstance(uris, str):
                    uris, fileNames, nodeNames = [uris], [fileNames], [nodeNames]
                    loadFileTypes, checksums, loadFiles = [loadFileTypes], [checksums], [loadFiles]
                source = types.SimpleNamespace(
                    sampleName=sampleName, uris=uris, fileNames=fileNames, nodeNames=nodeNames,
                    loadFileTypes=loadFileTypes, checksums=checksums, loadFiles=loadFiles,
                    customDownloader=customDownloader, thumbnailFileName=thumbnailFileName,
                    loadFileProperties=dict(loadFileProperties))
                if not len(uris) == len(fileNames) == len(nodeNames) == len(loadFileTypes) == len(checksums):
                    raise ValueError("All fields of sample data source must have the same length")
                listed = model.sources.setdefault(category, [])
                if vars(source) not in [vars(s) for s in listed]:  # isSampleDataSourceRegistered
                    listed.append(source)

            def downloadSample(self, sampleName):
                return self.downloadSamples(sampleName)[0]

            def downloadSamples(self, sampleName):
                source = next((s for sources in model.sources.values() for s in sources
                               if s.sampleName == sampleName), None)
                return model.download_from_source(source) if source else []

        self.SampleDataLogic = SampleDataLogic
        self.module = types.ModuleType("SampleData")
        self.module.SampleDataLogic = SampleDataLogic
        self.module.downloadSample = lambda name: SampleDataLogic().downloadSample(name)
        self.module.downloadSamples = lambda name: SampleDataLogic().downloadSamples(name)

    def download_file(self, uri, name, checksum):
        path = os.path.join(self.cache_dir, name)
        algo, digest = checksum.split(":") if checksum else (None, None)
        if not os.path.exists(path) or os.stat(path).st_size == 0:
            assert urllib.parse.urlsplit(uri).scheme == "file", f"sample data would be downloaded: {uri}"
            urllib.request.urlretrieve(uri, path)
            self.retrieved.append(uri)
            if algo and hashlib.new(algo.lower(), open(path, "rb").read()).hexdigest() != digest:
                os.remove(path)  # checksum verification failed
        elif algo and hashlib.new(algo.lower(), open(path, "rb").read()).hexdigest() != digest:
            os.remove(path)  # "File already exists in cache but checksum is different"
            return self.download_file(uri, name, checksum)
        return path

    def load_node(self, path, name, file_type, properties):
        properties = dict(properties, fileName=path)
        if name:
            properties["name"] = name
        reader_class = self.readers.get(file_type)
        if reader_class is None:
            return None  # no reader of that file type: "Load failed!"
        parent = ReaderParent()
        if not reader_class(parent).load(properties) or not parent.loadedNodes:
            return None
        return self.scene.GetNodeByID(parent.loadedNodes[0])

    def download_from_source(self, source):
        nodes, paths = [], []
        for uri, name, node_name, checksum, file_type in zip(source.uris, source.fileNames, source.nodeNames,
                                                              source.checksums, source.loadFileTypes):
            path = self.download_file(uri, name, checksum)
            if not os.path.exists(path):
                continue  # Slicer retries, then gives up
            if node_name:
                node = self.load_node(path, node_name, file_type, source.loadFileProperties)
                if node is not None:
                    nodes.append(node)
            else:
                paths.append(path)
        return nodes or paths


@pytest.fixture
def slicer_module(clean_modules):
    """IronMapping.py loaded as Slicer loads it (its reader class and the library)."""
    return load_like_slicer("5.10", MODULE_FILE)


@pytest.fixture
def sample_data(slicer_module, mrml_scene, tmp_path, monkeypatch):
    model = SampleDataModel(tmp_path / "cache", [slicer_module.IronMappingFileReader], mrml_scene)
    os.makedirs(model.cache_dir)
    monkeypatch.setitem(sys.modules, "SampleData", model.module)
    from IronMapping import sample_data as ours

    assert ours.register() is True
    return model


def test_register_signature_is_slicers():
    """Our keyword arguments exist in registerCustomSampleDataSource of 5.8.1 and 5.10.0."""
    from IronMapping import sample_data as ours

    slicer_parameters = {"category", "sampleName", "uris", "fileNames", "nodeNames", "customDownloader",
                         "thumbnailFileName", "loadFileTypes", "loadFiles", "loadFileProperties", "checksums",
                         "loadFileType"}
    model = SampleDataModel(".", [], None)
    assert set(inspect.signature(model.SampleDataLogic.registerCustomSampleDataSource).parameters) == slicer_parameters
    sources = ours.sample_sources()
    assert [s["sampleName"] for s in sources] == list(ours.SAMPLES)
    for source in sources:
        assert set(source) <= slicer_parameters
        assert "customDownloader" not in source, "downloadSample() ignores customDownloader"
        assert urllib.parse.urlsplit(source["uris"]).scheme == "file"
        assert os.path.isfile(urllib.request.url2pathname(urllib.parse.urlsplit(source["uris"]).path))
        assert os.path.isfile(source["thumbnailFileName"])


def test_download_sample_from_code_generates_the_phantom(sample_data, mrml_scene):
    from IronMapping.phantom import make_phantom

    sequence = sample_data.module.downloadSample(SAMPLE)
    assert sequence is not None and sequence.IsA("vtkMRMLSequenceNode")
    assert sequence.GetName() == SAMPLE
    assert mrml_scene.GetNodeByID(sequence.GetID()) is sequence
    segmentations = [mrml_scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
                     for i in range(mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]
    assert len(segmentations) == 1
    segment_names = {segmentations[0].GetSegmentation().GetNthSegment(i).GetName()
                     for i in range(segmentations[0].GetSegmentation().GetNumberOfSegments())}
    assert {"liver", "spleen", "pancreas", "thyroid"} <= segment_names
    # the recipe's phantom: same echo times and signal as the library makes it
    from IronMapping.sample_data import recipe_path

    recipe = json.loads(recipe_path(SAMPLE).read_text(encoding="utf-8"))
    truth = make_phantom(recipe["preset"], **{k: tuple(v) if isinstance(v, list) else v
                                              for k, v in recipe["options"].items()})
    labels = [float(t) for t in sequence.GetAttribute("MultiVolume.FrameLabels").split(",")]
    assert np.allclose(labels, truth.image.echo_times_ms)
    first = slicer.util.arrayFromVolume(sequence.GetNthDataNode(0))
    assert np.allclose(first, truth.image.signal[0], rtol=1e-5, atol=1e-3)


def test_download_sample_reuses_or_replaces_the_cached_recipe(sample_data, mrml_scene):
    logic = sample_data.SampleDataLogic()
    logic.downloadSample(SAMPLE)
    assert len(sample_data.retrieved) == 1
    logic.downloadSample(SAMPLE)  # cached copy with the right checksum: reused
    assert len(sample_data.retrieved) == 1
    cached = os.path.join(sample_data.cache_dir, SAMPLE + ".ironphantom")
    with open(cached, "w", encoding="utf-8") as f:  # an outdated copy from an earlier version
        f.write('{"format": "IronMapping phantom recipe", "preset": "normal"}')
    node = logic.downloadSample(SAMPLE)
    assert len(sample_data.retrieved) == 2 and node.GetName() == SAMPLE
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 3


def test_every_preset_loads(sample_data):
    from IronMapping.sample_data import SAMPLES

    for sample in SAMPLES:
        node = sample_data.module.downloadSample(sample)
        assert node is not None and node.GetName() == sample


def test_reader_refuses_a_bad_recipe_with_a_message(slicer_module, mrml_scene, tmp_path):
    from IronMapping.errors import InputError
    from IronMapping.sample_data import read_recipe

    bad = tmp_path / "bad.ironphantom"
    for text, words in [("not json", "not an Iron Mapping phantom recipe"),
                        ('{"format": "something else"}', "format"),
                        ('{"format": "IronMapping phantom recipe", "preset": "iron-man"}', "choose one of"),
                        ('{"format": "IronMapping phantom recipe", "preset": "normal", "options": {"snr": 5, "colour": 1}}',
                         "unknown phantom option")]:
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(InputError, match=words):
            read_recipe(bad)
        parent = ReaderParent()
        count = mrml_scene.GetNumberOfNodes()
        assert slicer_module.IronMappingFileReader(parent).load({"fileName": str(bad), "name": "x"}) is False
        assert parent.loadedNodes == [] and mrml_scene.GetNumberOfNodes() == count
        assert parent.messages.GetNumberOfMessages() == 1 and words.split()[0] in parent.messages.GetNthMessageText(0)


def test_reader_claims_only_recipe_files(slicer_module):
    from IronMapping.sample_data import FILE_TYPE

    reader = slicer_module.IronMappingFileReader(ReaderParent())
    assert reader.fileType() == FILE_TYPE
    assert reader.extensions() == ["Iron Mapping phantom recipe (*.ironphantom)"]
    assert reader.canLoadFileConfidence("/x/IronPhantomNormal.ironphantom") > 0.5
    assert reader.canLoadFileConfidence("/x/scan.nrrd") == 0.0


def test_echo_volume_path_gives_the_sequence_results(sample_data, mrml_scene):
    """The phantom's echoes loaded one by one, echo times typed in: the same maps and table."""
    from IronMapping import scene as mrml
    from IronMapping.logic import IronMappingLogic
    from IronMapping.sample_data import echo_volumes

    sequence = sample_data.module.downloadSample(SAMPLE)
    segmentation = mrml_scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    echo_times = [float(t) for t in sequence.GetAttribute("MultiVolume.FrameLabels").split(",")]
    volumes = echo_volumes(sequence)
    assert len(volumes) == len(echo_times) == sequence.GetNumberOfDataNodes()
    assert all(v.GetAttribute("MultiVolume.FrameLabels") is None for v in volumes)
    from_sequence = IronMappingLogic().process(sequence, segmentationNode=segmentation)
    from_volumes = IronMappingLogic().process(volumes, echoTimesMs=echo_times, segmentationNode=segmentation,
                                              fieldStrengthT=1.5)
    assert np.array_equal(mrml.volume_array(from_volumes["r2star"]), mrml.volume_array(from_sequence["r2star"]),
                          equal_nan=True)
    by_volume = {r["name"]: r["r2star_median"] for r in from_volumes.summary["regions"]}
    by_sequence = {r["name"]: r["r2star_median"] for r in from_sequence.summary["regions"]}
    assert by_volume == by_sequence
