"""Map and label-map files: exact geometry (checked against Slicer's own readers/writers),
header units, Slicer segmentations and colour tables."""

import json

import numpy as np
import pytest

from IronMapping import maps_io
from IronMapping.errors import GeometryError, InputError


def oblique_ijk_to_ras(angle=0.35, spacing=(0.9, 1.3, 4.5), origin=(12.5, -40.25, 7.0),
                       left_handed=False):
    """A rotated (about two axes), anisotropic grid, as an oblique MR acquisition has."""
    a, b = angle, 0.5 * angle
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    m = np.eye(4)
    m[:3, :3] = rz @ rx @ np.diag(spacing)
    if left_handed:
        m[:3, 2] *= -1
    m[:3, 3] = origin
    return m


def slicer_volume_from_file(path):
    """Read a file with Slicer's own volume reader (slicer-core); returns (array, ijk_to_ras)."""
    slicer = pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML) is not installed")
    import vtk

    scene = slicer.vtkMRMLScene()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    node = slicer.vtkMRMLScalarVolumeNode()
    scene.AddNode(node)
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    matrix = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    return slicer.util.arrayFromVolume(node).copy(), matrix


@pytest.mark.parametrize("left_handed", [False, True])
def test_geometry_conversion_round_trip(left_handed):
    m = oblique_ijk_to_ras(left_handed=left_handed)
    image = maps_io.image_from_array(np.zeros((3, 4, 5), np.float32), m)
    np.testing.assert_allclose(maps_io.ijk_to_ras_from_sitk(image), m, rtol=0, atol=1e-12)
    # RAS -> LPS: the first two physical axes flip sign.
    origin, spacing, _ = maps_io.sitk_geometry(m)
    assert origin == pytest.approx((-12.5, 40.25, 7.0))
    assert spacing == pytest.approx((0.9, 1.3, 4.5))


def test_degenerate_geometry_is_refused():
    m = np.eye(4)
    m[:3, 2] = 0.0
    with pytest.raises(GeometryError, match="degenerate"):
        maps_io.sitk_geometry(m)


@pytest.mark.parametrize("fmt, atol", [("nrrd", 1e-9), ("nifti", 1e-4)])
def test_maps_keep_the_exact_input_geometry(tmp_path, fmt, atol):
    rng = np.random.default_rng(0)
    m = oblique_ijk_to_ras()
    shape = (5, 7, 9)  # k, j, i: all different so any axis mix-up shows
    r2 = rng.uniform(10, 900, shape).astype(np.float32)
    r2[0, 0, 0] = np.nan
    status = rng.integers(0, 6, shape).astype(np.uint8)
    files = maps_io.write_maps(tmp_path, {"r2star": r2, "status": status}, m, fmt,
                               provenance={"method": "noise-corrected",
                                           "echo_times_ms": [1.0, 2.0, 3.0]})
    assert files["r2star"].name == ("r2star.nrrd" if fmt == "nrrd" else "r2star.nii.gz")
    back = maps_io.read_volume(files["r2star"])
    if fmt == "nifti":
        # The file holds NaN, but ITK's NIfTI reader (also Slicer's) turns NaN into 0.
        assert back.array[0, 0, 0] in (0.0,) or np.isnan(back.array[0, 0, 0])
        back.array[0, 0, 0] = np.nan
    np.testing.assert_array_equal(back.array, r2)  # NaN positions included
    np.testing.assert_allclose(back.ijk_to_ras, m, rtol=0, atol=atol)
    status_back = maps_io.read_volume(files["status"])
    assert status_back.array.dtype == np.uint8
    np.testing.assert_array_equal(status_back.array, status)

    sidecar = json.loads(maps_io.sidecar_path(files["r2star"]).read_text())
    assert sidecar["unit"] == "1/s" and sidecar["quantity"] == "R2*"
    assert sidecar["method"] == "noise-corrected"
    assert sidecar["echo_times_ms"] == [1.0, 2.0, 3.0]
    assert "research" in sidecar["research_use"].lower()
    status_codes = json.loads(maps_io.sidecar_path(files["status"]).read_text())["status_codes"]
    assert status_codes["1"].startswith("FITTED")
    if fmt == "nrrd":
        assert back.metadata["IronMapping.unit"] == "1/s"
        assert back.metadata["IronMapping.method"] == "noise-corrected"


@pytest.mark.parametrize("fmt", ["nrrd", "nifti"])
def test_slicer_reads_maps_at_the_input_position(tmp_path, fmt):
    """Slicer's own reader must place the written map exactly where the input was."""
    m = oblique_ijk_to_ras(left_handed=True)
    data = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    path = maps_io.write_maps(tmp_path, {"t2star": data}, m, fmt)["t2star"]
    array, matrix = slicer_volume_from_file(path)
    assert_same_physical_volume(array, matrix, data, m, atol_mm=1e-3 if fmt == "nifti" else 1e-9)


def assert_same_physical_volume(array_a, m_a, array_b, m_b, atol_mm):
    """Every voxel of a holds b's value at the same RAS position (a reader may flip axes)."""
    assert array_a.size == array_b.size
    k, j, i = np.indices(array_a.shape).reshape(3, -1)
    ras = m_a @ np.vstack([i, j, k, np.ones_like(i)])
    ijk_b = np.linalg.solve(m_b, ras)[:3]
    nearest = np.rint(ijk_b)
    np.testing.assert_allclose(m_b[:3, :3] @ (ijk_b - nearest), 0.0, atol=atol_mm)
    ib, jb, kb = nearest.astype(int)
    np.testing.assert_array_equal(array_a[k, j, i], array_b[kb, jb, ib])


def test_t2_quantity_relabels_spin_echo_maps():
    meta = maps_io.map_metadata("r2star", {"method": "nlls"}, quantity_override="T2")
    assert meta["quantity"] == "R2" and "R2*" not in meta["description"]


def test_sheared_geometry_cannot_go_to_nifti(tmp_path):
    m = np.eye(4)
    m[0, 1] = 0.5  # j axis tilted towards i: not perpendicular
    with pytest.raises(GeometryError, match="NRRD"):
        maps_io.write_volume(tmp_path / "x.nii.gz", np.zeros((2, 3, 4), np.float32), m)
    path = maps_io.write_volume(tmp_path / "x.nrrd", np.zeros((2, 3, 4), np.float32), m)
    np.testing.assert_allclose(maps_io.read_volume(path).ijk_to_ras, m, atol=1e-9)


def test_unknown_map_name_and_format_are_refused(tmp_path):
    with pytest.raises(InputError, match="Unknown map"):
        maps_io.write_maps(tmp_path, {"r2": np.zeros((1, 1, 1))}, np.eye(4))
    with pytest.raises(InputError, match="format"):
        maps_io.output_path(tmp_path, "r2star", "dicom")


# --------------------------------------------------------------------------- label maps

def _slicer_segmentation(path, ijk_to_ras, layers):
    """Write a real .seg.nrrd with slicer-core. layers: list of (label array, {value: name})."""
    slicer = pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML) is not installed")
    import vtk

    scene = slicer.vtkMRMLScene()
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, ijk_to_ras[r, c])
    names = []
    for array, layer_names in layers:
        node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        node.SetIJKToRASMatrix(matrix)
        slicer.util.updateVolumeFromArray(node, array)
        assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(node, seg)
        names += [layer_names[v] for v in sorted(layer_names)]
    segmentation = seg.GetSegmentation()
    for n, name in enumerate(names):
        segmentation.GetNthSegment(n).SetName(name)
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.WriteData(seg) == 1
    return segmentation.GetNumberOfLayers()


def test_slicer_segmentation_is_read_onto_the_image_grid(tmp_path):
    m = oblique_ijk_to_ras()
    labels = np.zeros((6, 10, 12), np.uint8)
    labels[1:3, 2:6, 3:8] = 1
    labels[3:5, 5:9, 1:4] = 4
    path = tmp_path / "organs.seg.nrrd"
    _slicer_segmentation(path, m, [(labels, {1: "Liver", 4: "spleen"})])
    raw = maps_io.read_labels(path)
    assert raw.labels.shape != labels.shape  # Slicer crops to the segments' extent
    lm = maps_io.read_labels(path, reference_shape=labels.shape, reference_ijk_to_ras=m)
    assert lm.names == {1: "Liver", 2: "spleen"}
    np.testing.assert_array_equal(lm.labels == 1, labels == 1)
    np.testing.assert_array_equal(lm.labels == 2, labels == 4)
    assert lm.warnings == []  # a crop is not a resampling


def test_overlapping_segments_on_two_layers(tmp_path):
    m = np.diag([1.5, 2.0, 3.0, 1.0])
    organs = np.zeros((5, 8, 10), np.uint8)
    organs[1:4, 1:7, 1:9] = 1
    lesion = np.zeros_like(organs)
    lesion[2, 3:5, 3:5] = 1
    path = tmp_path / "overlap.seg.nrrd"
    n_layers = _slicer_segmentation(path, m, [(organs, {1: "liver"}), (lesion, {1: "lesion"})])
    assert n_layers == 2
    lm = maps_io.read_labels(path, reference_shape=organs.shape, reference_ijk_to_ras=m)
    assert lm.names == {1: "liver", 2: "lesion"}
    np.testing.assert_array_equal(lm.labels == 2, lesion == 1)
    np.testing.assert_array_equal(lm.labels == 1, (organs == 1) & (lesion == 0))
    assert any("overlaps" in w and "4 voxels" in w for w in lm.warnings)


def test_label_volume_with_names_beside_it_and_resampling(tmp_path):
    labels = np.zeros((4, 6, 6), np.int16)
    labels[1:3, 1:5, 1:5] = 2
    labels[0, 0, 0] = 7
    m = np.diag([2.0, 2.0, 4.0, 1.0])
    maps_io.write_volume(tmp_path / "roi.nrrd", labels, m, sidecar=False)
    (tmp_path / "roi.csv").write_text("value,name\n2,pancreas\n")
    lm = maps_io.read_labels(tmp_path / "roi.nrrd")
    assert lm.names == {2: "pancreas", 7: "label 7"}
    # Onto a grid of half the voxel size: each voxel doubles along i and j.
    fine = np.diag([1.0, 1.0, 4.0, 1.0])
    fine[:3, 3] = [-0.5, -0.5, 0.0]
    on_fine = maps_io.read_labels(tmp_path / "roi.nrrd", reference_shape=(4, 12, 12),
                                  reference_ijk_to_ras=fine)
    np.testing.assert_array_equal(on_fine.labels[:, ::2, ::2], labels)
    assert any("resampled" in w for w in on_fine.warnings)


def test_labels_outside_the_image_are_refused(tmp_path):
    labels = np.ones((2, 2, 2), np.uint8)
    far = np.eye(4)
    far[:3, 3] = 1000.0
    maps_io.write_volume(tmp_path / "far.nrrd", labels, far, sidecar=False)
    with pytest.raises(GeometryError, match="does not overlap"):
        maps_io.read_labels(tmp_path / "far.nrrd", reference_shape=(4, 4, 4),
                            reference_ijk_to_ras=np.eye(4))


def test_non_integer_label_volume_is_refused(tmp_path):
    maps_io.write_volume(tmp_path / "img.nrrd", np.full((2, 2, 2), 0.5, np.float32), np.eye(4),
                         sidecar=False)
    with pytest.raises(InputError, match="non-integer"):
        maps_io.read_labels(tmp_path / "img.nrrd")
    with pytest.raises(InputError, match="does not exist"):
        maps_io.read_labels(tmp_path / "missing.nrrd")


def test_label_names_from_csv_variants(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("1,liver\n2, skeletal muscle\n0,background\n")
    assert maps_io.read_label_names(plain) == {1: "liver", 2: "skeletal muscle"}
    headed = tmp_path / "headed.csv"
    headed.write_text("name,value\nspleen,3\n")
    assert maps_io.read_label_names(headed) == {3: "spleen"}
    bad = tmp_path / "bad.csv"
    bad.write_text("1,liver\ntwo,spleen\n")
    with pytest.raises(InputError, match="not an integer"):
        maps_io.read_label_names(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("0,background\n")
    with pytest.raises(InputError, match="names no label"):
        maps_io.read_label_names(empty)


@pytest.mark.parametrize("suffix", [".ctbl", ".txt", ".csv"])
def test_label_names_from_slicer_colour_tables(tmp_path, suffix):
    slicer = pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML) is not installed")
    scene = slicer.vtkMRMLScene()
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode")
    table.SetTypeToUser()
    table.SetNumberOfColors(4)
    for value, name in enumerate(["Background", "liver", "skeletal muscle", "spleen"]):
        table.SetColor(value, name, 0.1 * value, 0.2, 0.3, 1.0)
    storage = scene.AddNewNodeByClass("vtkMRMLColorTableStorageNode")
    path = tmp_path / f"colours{suffix}"
    storage.SetFileName(str(path))
    assert storage.WriteData(table) == 1
    assert maps_io.read_label_names(path) == {1: "liver", 2: "skeletal muscle", 3: "spleen"}
