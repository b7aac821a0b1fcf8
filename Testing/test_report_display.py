"""Map display for the report: radiological orientation from the direction matrix, the iron
colour scale, outlines on any colour, every organ slice shown (or which), and report.pdf."""

import re
import sys

import numpy as np
import pytest

from IronMapping import display, report
from IronMapping.image import MultiEchoImage
from IronMapping.relaxometry import fit


def matrix(i_dir, j_dir, k_dir, spacing=(1.0, 1.0, 1.0)):
    m = np.eye(4)
    for n, (d, s) in enumerate(zip((i_dir, j_dir, k_dir), spacing)):
        m[:3, n] = np.asarray(d, float) * s
    return m


def displayed_corner(view, plane):
    """Where the marker voxel ends up: (row half, column half) of the displayed image."""
    shown = view.apply(plane)
    r, c = np.argwhere(shown == 1)[0]
    return ("top" if r < shown.shape[0] / 2 else "bottom"), ("left" if c < shown.shape[1] / 2 else "right")


# Stored slice arrays [j, i]: a marker voxel at the patient's LEFT-ANTERIOR (axial) /
# LEFT-SUPERIOR (coronal) / ANTERIOR-SUPERIOR (sagittal) corner must land where a radiologist
# expects it: left on the image right, anterior / superior up, sagittal anterior on the left.
CASES = {
    # axial, Slicer's RAS from LPS DICOM (i to patient left, j to posterior): as stored
    "axial LPS": (matrix((-1, 0, 0), (0, -1, 0), (0, 0, 1)), "axial", ("top", "right")),
    # axial stored with i to patient right and j anterior: both axes reversed
    "axial RAS": (matrix((1, 0, 0), (0, 1, 0), (0, 0, 1)), "axial", ("top", "right")),
    # axial stored transposed (i along anterior-posterior)
    "axial transposed": (matrix((0, -1, 0), (-1, 0, 0), (0, 0, -1)), "axial", ("top", "right")),
    # coronal as the GE kidney study: i to left, j to superior (stored upside down)
    "coronal GE": (matrix((-1, 0.01, 0), (0, -0.1, 1), (0, -1, -0.1), (1.5, 1.5, 5)), "coronal",
                   ("top", "right")),
    "sagittal": (matrix((0, 1, 0), (0, 0, -1), (1, 0, 0)), "sagittal", ("top", "left")),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_radiological_orientation_from_the_direction_matrix(name):
    m, plane, expected = CASES[name]
    view = display.plane_view(m)
    assert view.plane == plane
    nj, ni = 20, 30
    ii, jj = np.meshgrid(np.arange(ni), np.arange(nj))
    ras = np.einsum("ab,bjk->ajk", m[:3, :3], np.stack([ii, jj, np.zeros_like(ii)]).astype(float))
    # the corner of the stored slice nearest to the target corner in patient coordinates
    target = {"axial": (-1, 1, 0), "coronal": (-1, 0, 1), "sagittal": (0, 1, 1)}[plane]
    score = np.tensordot(np.asarray(target, float), ras, axes=1)
    stored = np.zeros((nj, ni))
    stored[np.unravel_index(np.argmax(score), score.shape)] = 1
    assert displayed_corner(view, stored) == expected
    letters = view.letters
    if plane in ("axial", "coronal"):
        assert letters["right"] == "L" and letters["left"] == "R"
        assert letters["top"] == ("A" if plane == "axial" else "S")
    else:
        assert letters["top"] == "S" and letters["left"] == "A"


def test_oblique_letters_name_both_directions():
    assert display.direction_letters((0.8, 0.6, 0.0)) == "RA"
    assert display.direction_letters((0.0, 0.0, -1.0)) == "I"
    assert display.slice_position(np.diag([1, 1, 2.0, 1]), 3, (10, 4, 4)) == "S 6.0 mm"


def luminance(rgb):
    return float(np.dot(rgb, [0.2126, 0.7152, 0.0722]))


def test_iron_colour_scale_separates_the_liver_bands_and_keeps_normal_tissue_visible():
    scale = display.iron_scale(1.5)
    assert scale.kind == "bands" and scale.limits[:4] == (0.0, 65.0, 224.0, 475.0)
    eps = 0.5
    for limit in (65.0, 224.0, 475.0):
        below, above = scale.rgb(np.array([limit - eps, limit + eps]))
        assert np.abs(below - above).max() > 0.25, f"no colour step at {limit} 1/s"
    # spleen / kidney / muscle (20-28 1/s) are clearly not background black
    assert min(luminance(c) for c in scale.rgb(np.array([20.0, 28.0]))) > 0.15
    assert np.all(scale.rgb(np.array([np.nan])) == 0)
    assert display.iron_scale(3.0).limits[1:4] == (119.0, 435.0, 952.0)
    log = display.iron_scale(None)
    assert log.kind == "log" and "logarithmic" in log.describe()
    assert display.iron_scale(1.5, quantity="T2").kind == "log"  # no liver bands for R2


def test_outlines_show_on_dark_and_bright_maps():
    labels = np.zeros((12, 12), int)
    labels[3:9, 3:9] = 1
    for background in (0.0, 1.0):
        rgb = np.full((12, 12, 3), background, np.float32)
        display.draw_outlines(rgb, labels)
        edge, halo = display.outline_masks(labels)
        assert np.all(rgb[edge] == 1.0) and np.all(rgb[halo] == 0.0)
        assert edge.any() and halo.any() and not (edge & halo).any()


def _study(shape=(20, 20, 24), ijk_to_ras=None):
    rng = np.random.default_rng(0)
    te = np.arange(1.0, 9.0)
    labels = np.zeros(shape, np.int32)
    labels[:, 4:12, 4:12] = 1
    labels[2:-2, 12:18, 14:22] = 2
    r2 = np.where(labels == 1, 400.0, np.where(labels == 2, 30.0, 20.0))
    signal = 1000.0 * np.exp(-np.multiply.outer(te / 1000.0, r2))
    signal = np.abs(signal + rng.normal(0, 5.0, signal.shape)).astype(np.float32)
    m = np.diag([-1.5, -1.5, 5.0, 1.0]) if ijk_to_ras is None else ijk_to_ras
    image = MultiEchoImage(signal, te, m, field_strength_t=1.5)
    return image, fit(signal, te, noise_sigma=5.0, coils=1), labels


def test_every_organ_slice_is_shown_or_the_page_says_which(monkeypatch):
    pytest.importorskip("matplotlib", reason="figures need the optional matplotlib")
    from IronMapping import report_figures

    image, result, labels = _study()
    names = {1: "liver", 2: "spleen"}
    page = report.render_report({"field_strength_t": 1.5}, fit=result, image=image,
                                labels=labels, label_names=names)
    assert "All 20 slices that hold a segmented region are shown" in page
    assert "radiological convention" in page and "liver iron bands at 1.5 T" in page
    assert "TE 1 ms" in page  # the first-echo panel beside the R2* map
    monkeypatch.setattr(report_figures, "MAX_MONTAGE_SLICES", 8)
    page = report.render_report({"field_strength_t": 1.5}, fit=result, image=image,
                                labels=labels, label_names=names)
    match = re.search(r"8 of the 20 slices that hold a segmented region are shown, evenly spaced: "
                      r"([^<]*?mm)\. Each region", page)
    assert match and match.group(1).count("mm") == 8


def test_decay_plot_draws_the_noise_floor():
    pytest.importorskip("matplotlib", reason="figures need the optional matplotlib")
    image, result, labels = _study(shape=(3, 20, 24))
    page = report.render_report({}, fit=result, image=image, labels=labels,
                                label_names={1: "liver", 2: "spleen"})
    assert "noise floor (mean magnitude of pure noise" in page
    assert page.count('src="data:image/png;base64,') == 3


def test_pdf_beside_the_html_when_matplotlib_is_there(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="the PDF needs the optional matplotlib")
    image, result, labels = _study(shape=(3, 20, 24))
    summary = {"field_strength_t": 1.5, "regions": [
        {"name": "liver", "organ": "liver", "n_voxels": 192, "r2star_median": 400.0,
         "lic_mg_per_g": 10.36, "grade": "moderate"}]}
    out = report.write_report(tmp_path / "report.html", summary, fit=result, image=image,
                              labels=labels, label_names={1: "liver", 2: "spleen"})
    pdf = report.pdf_path(out)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", data)) == 4
    (tmp_path / "run.json").write_text("{}")  # the folder is an IronMapping run's
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    report.write_report(tmp_path / "report.html", summary, fit=result, image=image, labels=labels)
    assert not pdf.exists(), "a stale PDF must not stay beside a newer report"


def test_organ_names_do_not_overlap_each_other_or_the_letters():
    from IronMapping.report_figures import place_names

    regions = [("soft tissue", 0, 90, 0, 120, 60), ("myocardium", 4, 20, 50, 70, 60),
               ("liver", 30, 60, 10, 50, 30), ("liver lesion", 40, 48, 25, 33, 29)]
    letters = [(50, 0, 70, 16)]
    placed = place_names(regions, 120, 100, 8.0, letters)
    boxes = []
    for name, x, y in placed:
        bw, bh = 0.6 * 8.0 * len(name) + 4, 1.3 * 8.0
        box = (x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2)
        assert 0 <= box[0] and box[2] <= 120 and 0 <= box[1] and box[3] <= 100, name
        assert not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                       for b in boxes + letters), f"{name} overlaps"
        boxes.append(box)
