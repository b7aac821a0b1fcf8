"""The HTML report: self-contained, tables with units and sources, figures when matplotlib is
there, and still complete tables without it."""

import base64
import re
import sys

import numpy as np
import pytest

from IronMapping import RESEARCH_USE_STATEMENT, __version__, report
from IronMapping.image import MultiEchoImage
from IronMapping.relaxometry import fit


def summary_like_issue_4():
    """A summary dict of the statistics issue's JSON shape (values made up, not computed)."""
    return {
        "regions": [
            {"name": "liver", "organ": "liver", "n_voxels": 500, "volume_ml": 27.0,
             "r2star_median": 420.0, "r2star_mean": 421.5, "r2star_sd": 20.0,
             "t2star_median": 2.38, "r2star_roi_fit": 418.0, "lic_mg_per_g": 10.87,
             "grade": "moderate", "excluded_fraction": 0.02,
             "grade_source": "PMC8528353 Table 7"},
            {"name": "<b>spleen</b>", "organ": "spleen", "n_voxels": 120, "volume_ml": 6.5,
             "r2star_median": 30.0, "r2star_mean": 30.2, "r2star_sd": 2.0,
             "t2star_median": 33.3, "r2star_roi_fit": 30.1, "lic_mg_per_g": None,
             "grade": None},
        ],
        "pattern": {"kind": "parenchymal", "extrahepatic_siderosis": True,
                    "spleen_spared": True,
                    "text": "Parenchymal pattern: liver and pancreas loaded, spleen spared."},
        "calibration": {"name": "wood2005", "label": "Wood 2005",
                        "citation": "Wood JC et al. Blood 2005;106:1460", "doi": "10.1182/x",
                        "equation": "LIC = 0.0254 R2* + 0.202", "field_strength_t": 1.5,
                        "applied": True, "default": True, "warnings": []},
        "field_strength_t": 1.5,
        "method": "noise-corrected",
        "lesions": [{"lesion": "lesion", "background": "liver", "difference_r2star": -300.0,
                     "reading": "hyperintense to liver on T2*"}],
        "sir": {"reference": "muscle", "echo_times_ms": [1.0, 2.0],
                "regions": {"liver": [0.8, 0.5]}, "note": "Gandon 2004"},
        "warnings": ["something the reader must know"],
        "notes": ["a note"],
    }


def test_tables_sources_and_statement_without_figures():
    html = report.render_report(summary_like_issue_4(), figures=False,
                                inputs={"input": "/data/study1", "labels": "organs.seg.nrrd"})
    assert RESEARCH_USE_STATEMENT in html
    assert f"IronMapping {__version__}" in html
    assert "Parenchymal pattern: liver and pancreas loaded, spleen spared." in html
    for header in ("R2* median (1/s)", "T2* median (ms)", "LIC (mg Fe/g dw)", "Volume (mL)",
                   "Grade", "R2* ROI fit (1/s)"):
        assert header in html, header
    assert "moderate" in html and "10.87" in html
    assert "Wood JC et al. Blood 2005;106:1460" in html and "LIC = 0.0254 R2* + 0.202" in html
    assert "PMC8528353 Table 7" in html  # grade source per region
    assert "hyperintense to liver on T2*" in html
    assert "TE 2 ms" in html  # signal intensity ratio per echo
    assert "something the reader must know" in html
    assert "/data/study1" in html and "organs.seg.nrrd" in html
    assert "skipped on request" in html
    assert "<b>spleen</b>" not in html and "&lt;b&gt;spleen&lt;/b&gt;" in html  # escaped
    assert "<img" not in html
    assert "data:" not in html and "<script" not in html


def _image_and_fit(shape=(3, 20, 24)):
    rng = np.random.default_rng(1)
    te = np.arange(1.0, 9.0)
    labels = np.zeros(shape, np.int32)
    labels[:, 4:12, 4:12] = 1
    labels[:, 12:18, 14:22] = 2
    r2 = np.where(labels == 1, 400.0, np.where(labels == 2, 30.0, 20.0))
    signal = 1000.0 * np.exp(-np.multiply.outer(te / 1000.0, r2))
    signal = np.abs(signal + rng.normal(0, 5.0, signal.shape)).astype(np.float32)
    image = MultiEchoImage(signal, te, np.diag([1.5, 1.5, 5.0, 1.0]), field_strength_t=1.5)
    return image, fit(signal, te, noise_sigma=5.0, coils=1), labels


def test_figures_are_embedded_png():
    pytest.importorskip("matplotlib", reason="figures need the optional matplotlib")
    image, result, labels = _image_and_fit()
    html = report.render_report(summary_like_issue_4(), fit=result, image=image, labels=labels,
                                label_names={1: "liver", 2: "<b>spleen</b>"})
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 3  # key slice, montage of every organ slice, decay curves
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    # self-contained: nothing is fetched from elsewhere
    assert not re.search(r'(src|href)="(?!data:)', html)
    assert "<link" not in html and "<script" not in html


def test_without_matplotlib_the_report_keeps_its_tables(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    assert not report.matplotlib_available()
    image, result, labels = _image_and_fit()
    path = report.write_report(tmp_path / "r.html", summary_like_issue_4(), fit=result,
                               image=image, labels=labels, label_names={1: "liver"})
    html = path.read_text()
    assert "matplotlib is not installed" in html and "ironmapping[report]" in html
    assert "R2* median (1/s)" in html and "<img" not in html


def test_mean_decay_matches_direct_means():
    image, _, labels = _image_and_fit()
    means = report.mean_decay(image.signal, labels, [1, 2])
    for n, value in enumerate([1, 2]):
        direct = image.signal[:, labels == value].mean(axis=1)
        np.testing.assert_allclose(means[n], direct, rtol=1e-5)


def test_spin_echo_reports_say_t2():
    summary = summary_like_issue_4()
    summary["quantity"] = "T2"
    html = report.render_report(summary, figures=False)
    assert "R2 median (1/s)" in html and "T2 median (ms)" in html
