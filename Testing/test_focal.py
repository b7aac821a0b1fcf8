"""Focal findings inside organs (IronMapping.focal, focal_phase) on the phantom with known foci."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from IronMapping.errors import InputError
from IronMapping.focal import (DENSE, PHANTOM_EXCESS_CV_RANGE, SPARING, FocalOptions,
                               analyse_organ, find_focal_findings, findings_label_map,
                               mask_from_runs, mask_runs, write_focal_csv)
from IronMapping.organs import recognise_organ
from IronMapping.phantom import (FOCAL_LESIONS, LABELS, FocalLesion, make_focal_phantom,
                                 make_phantom)
from IronMapping.quantification import summarize
from IronMapping.relaxometry import fit

CONTRACT_KEYS = ("region", "kind", "volume_ml", "r2star_median", "background_r2star_median",
                 "centroid_ras", "reading")


def _regions(ph):
    return [(v, n, recognise_organ(n).organ, ph.labels == v) for v, n in ph.label_names.items()]


def _run(ph, **kwargs):
    result = fit(ph.image.signal, ph.image.echo_times_ms)
    out = find_focal_findings(result, _regions(ph), ph.image.voxel_volume_ml, ph.image.ijk_to_ras,
                              complex_signal=ph.image.metadata.get("complex_components"),
                              echo_times_ms=ph.image.echo_times_ms, field_strength_t=1.5, **kwargs)
    return result, out


def _match(finding, ph):
    """The truth focus a finding overlaps most (None when it overlaps none)."""
    mask = mask_from_runs(finding["mask_runs"], ph.labels.shape)
    counts = np.bincount(ph.focal_map[mask], minlength=len(ph.focal_truth) + 1)[1:]
    return int(np.argmax(counts)) if counts.any() else None


@pytest.fixture(scope="module")
def sparing():
    ph = make_focal_phantom("neonatal-haemochromatosis", snr=20, coils=1, seed=3)
    return ph, *_run(ph)


@pytest.fixture(scope="module")
def dense():
    ph = make_focal_phantom("normal", snr=20, coils=4, seed=4)
    return ph, *_run(ph)


def _check_every_focus_found(ph, out):
    found = {}
    for f in out["findings"]:
        n = _match(f, ph)
        if n is not None:
            found[n] = f
    for n, truth in enumerate(ph.focal_truth):
        assert n in found, f"{truth['name']} not found"
        f = found[n]
        assert f["kind"] == truth["kind"]
        assert f["region"] == truth["region"]
        assert abs(f["volume_ml"] - truth["volume_ml"]) <= 0.25 * truth["volume_ml"], truth["name"]
        assert np.linalg.norm(np.subtract(f["centroid_ras"], truth["centre_ras"])) < 6.0
        assert f["r2star_median"] == pytest.approx(truth["r2star"], rel=0.15)
        assert f["background_r2star_median"] == pytest.approx(truth["background_r2star"], rel=0.05)
    return found


def test_iron_sparing_foci_in_a_loaded_liver_are_found_with_their_volume(sparing):
    ph, _, out = sparing
    assert all(t["kind"] == SPARING and t["volume_ml"] >= 1.0 for t in ph.focal_truth)
    found = _check_every_focus_found(ph, out)
    # the phantom's drawn liver lesion (R2* 60 in a liver of 450) is found too; nothing else
    lesion = ph.labels == 8
    others = [f for f in out["findings"] if f not in found.values()]
    assert len(others) == 1
    assert mask_from_runs(others[0]["mask_runs"], lesion.shape)[lesion].mean() > 0.9
    text = found[0]["reading"]
    assert "excludes iron, as adenoma, HCC or metastasis do" in text
    assert "extramedullary haematopoiesis" in text and "1/s" in text and "mL" in text


def test_iron_dense_foci_in_a_normal_liver_and_spleen_with_field_shift_sign(dense):
    ph, _, out = dense
    found = _check_every_focus_found(ph, out)
    assert len(out["findings"]) == len(ph.focal_truth)  # no false finding
    for n, truth in enumerate(ph.focal_truth):
        shift = found[n]["field_shift"]
        assert shift["determined"], shift
        assert shift["sign"] == truth["field_shift_sign"]
        assert shift["susceptibility_ppm"] == pytest.approx(truth["susceptibility_ppm"], rel=0.6)
        assert "RAS S" in shift["b0_direction"] and "exp(+i 2 pi f t)" in shift["phase_convention"]
    calcium = found[[t["name"] for t in ph.focal_truth].index("liver calcium-like focus 2 mL")]
    assert "diamagnetic, as calcium" in calcium["reading"]
    spleen = [f for f in found.values() if f["region"] == "spleen"][0]
    assert "Gamna-Gandy" in spleen["reading"] and "paramagnetic, as iron" in spleen["reading"]


def test_reversed_phase_convention_reverses_the_sign(dense):
    ph, result, _ = dense
    out = find_focal_findings(result, _regions(ph), ph.image.voxel_volume_ml, ph.image.ijk_to_ras,
                              complex_signal=ph.image.metadata["complex_components"],
                              echo_times_ms=ph.image.echo_times_ms, field_strength_t=1.5,
                              precession_clockwise=False)
    signs = {_match(f, ph): f["field_shift"]["sign"] for f in out["findings"]}
    flip = {"paramagnetic": "diamagnetic", "diamagnetic": "paramagnetic"}
    for n, truth in enumerate(ph.focal_truth):
        assert signs[n] == flip[truth["field_shift_sign"]]
    assert "PrecessionIsClockwise = 0" in out["phase"]["phase_convention"]


def test_without_phase_the_sign_is_not_determined(dense):
    ph, result, _ = dense
    out = find_focal_findings(result, _regions(ph), ph.image.voxel_volume_ml, ph.image.ijk_to_ras)
    assert out["findings"]
    for f in out["findings"]:
        assert f["field_shift"]["sign"] is None and not f["field_shift"]["determined"]
        assert "not determined" in f["field_shift"]["reason"]
        assert "not determined" in f["reading"]
    assert out["phase"]["available"] is False


def test_weak_phase_evidence_is_not_determined(dense):
    ph, result, _ = dense
    comps = ph.image.metadata["complex_components"]
    rng = np.random.default_rng(0)
    magnitude = np.hypot(comps["real"], comps["imaginary"])
    scrambled = magnitude * np.exp(1j * rng.uniform(-np.pi, np.pi, magnitude.shape))
    out = find_focal_findings(result, _regions(ph), ph.image.voxel_volume_ml, ph.image.ijk_to_ras,
                              complex_signal=scrambled, echo_times_ms=ph.image.echo_times_ms)
    for f in out["findings"]:
        assert f["field_shift"]["sign"] is None
        assert "weak evidence" in f["field_shift"]["reason"]


@pytest.mark.parametrize("preset,seed", [("normal", 11), ("transfusional", 12),
                                         ("neonatal-haemochromatosis", 13)])
def test_no_false_finding_in_homogeneous_organs(preset, seed):
    """Organs of one R2* each: no finding, except the drawn liver lesion where it differs
    from the liver (neonatal haemochromatosis preset: 60 vs 450 1/s); elsewhere it is
    isointense (normal 30 = 30, transfusional 650 = 650)."""
    ph = make_phantom(preset, snr=20, coils=1, seed=seed)
    result = fit(ph.image.signal, ph.image.echo_times_ms)
    out = find_focal_findings(result, _regions(ph), ph.image.voxel_volume_ml, ph.image.ijk_to_ras)
    expected = 1 if ph.region_r2star["liver lesion"] != ph.region_r2star["liver"] else 0
    assert len(out["findings"]) == expected
    if expected:
        lesion = ph.labels == 8
        assert mask_from_runs(out["findings"][0]["mask_runs"], lesion.shape)[lesion].mean() > 0.9
    assert {o["region"] for o in out["organs"]} == {"liver", "spleen", "pancreas", "kidney"}
    for organ in out["organs"]:
        assert organ["heterogeneity_excess_cv"] <= PHANTOM_EXCESS_CV_RANGE[1], organ
        assert organ["heterogeneity_within_phantom_range"] is True


def _synthetic_fit(r2, u, status=None):
    status = np.ones(r2.shape, np.uint8) if status is None else status
    return SimpleNamespace(r2star=r2.astype(np.float32), uncertainty=u.astype(np.float32),
                           status=status)


def test_partial_volume_at_the_organ_edge_is_not_a_finding():
    rng = np.random.default_rng(1)
    shape = (8, 60, 60)
    k, j, i = np.ogrid[:8, :60, :60]
    organ = ((j - 30) ** 2 + (i - 30) ** 2 <= 24 ** 2) & (k >= 1) & (k <= 6)
    edge = organ & ~((j - 30) ** 2 + (i - 30) ** 2 <= 23 ** 2)
    r2 = 300.0 + 10.0 * rng.standard_normal(shape)
    r2[edge] = 150.0 + 10.0 * rng.standard_normal(int(edge.sum()))  # mixed with fat/air/vessel
    u = np.full(shape, 10.0)
    f = _synthetic_fit(r2, u)
    assert analyse_organ(f.r2star, f.uncertainty, f.status, organ, 0.05)[0] == []
    # the same edge does give findings when the edge is not eroded: the test can fail
    without = analyse_organ(f.r2star, f.uncertainty, f.status, organ, 0.05,
                            FocalOptions(erode_voxels=0))[0]
    assert without and all(a["kind"] == SPARING for a in without)


def test_dark_voxels_decaying_faster_than_the_echoes_join_a_dense_focus():
    rng = np.random.default_rng(2)
    shape = (6, 40, 40)
    organ = np.zeros(shape, bool)
    organ[1:5, 5:35, 5:35] = True
    r2 = 40.0 + 3.0 * rng.standard_normal(shape)
    u = np.full(shape, 3.0)
    status = np.ones(shape, np.uint8)
    focus = np.zeros(shape, bool)
    focus[2:4, 18:23, 18:23] = True                       # 50 voxels = 2.5 mL
    status[focus] = 4                                     # out of range: no R2*
    r2[focus] = np.nan
    areas, info = analyse_organ(r2, u, status, organ, 0.05)
    assert len(areas) == 1
    a = areas[0]
    assert a["kind"] == DENSE and a["n_voxels"] == 50 and a["n_dark_voxels"] == 50
    assert a["r2star_median"] is None
    assert info["background_r2star_median"] == pytest.approx(40.0, abs=1.0)


def test_minimum_size_is_user_settable(sparing):
    ph, result, out = sparing
    assert len(out["findings"]) == 3
    big = find_focal_findings(result, _regions(ph), ph.image.voxel_volume_ml,
                              options={"min_volume_ml": 5.0})
    assert [round(f["volume_ml"]) for f in big["findings"]] == [24]
    assert big["settings"]["min_volume_ml"] == 5.0
    assert FocalOptions(min_volume_ml=1.0, min_voxels=10).min_size_voxels(0.054) == 19
    assert FocalOptions().min_size_voxels(0.054) == 14
    assert FocalOptions(min_volume_ml=1.0, min_voxels=10).min_size_voxels(0.5) == 10
    assert FocalOptions().min_size_voxels(None) == 10
    with pytest.raises(InputError, match="Unknown focal-finding option"):
        find_focal_findings(result, _regions(ph), options={"minimum": 3})
    with pytest.raises(InputError, match="seed_z >= grow_z"):
        FocalOptions(seed_z=1.0, grow_z=2.0)


def test_textured_organ_has_excess_heterogeneity_above_the_phantom_range():
    rng = np.random.default_rng(5)
    shape = (6, 50, 50)
    organ = np.zeros(shape, bool)
    organ[1:5, 5:45, 5:45] = True
    r2 = 200.0 * np.exp(0.15 * rng.standard_normal(shape)) + 5.0 * rng.standard_normal(shape)
    areas, info = analyse_organ(r2, np.full(shape, 5.0), np.ones(shape, np.uint8), organ, 0.05)
    assert info["heterogeneity_excess_cv"] > 0.1
    assert info["heterogeneity_within_phantom_range"] is False
    assert info["heterogeneity_robust_cv"] >= info["heterogeneity_excess_cv"]
    assert areas == []   # texture is not a focal finding


def test_mask_runs_round_trip():
    rng = np.random.default_rng(7)
    mask = rng.random((5, 7, 9)) > 0.6
    assert np.array_equal(mask_from_runs(mask_runs(mask), mask.shape), mask)
    assert mask_runs(np.zeros((2, 2, 2), bool)) == []


def test_summarize_contract_and_lesion_matching(sparing):
    ph, result, _ = sparing
    s = summarize(result, ph.labels, ph.label_names, 1.5, signal=ph.image)
    findings = s["focal_findings"]
    assert isinstance(findings, list) and len(findings) == 3
    for f in findings:
        for key in CONTRACT_KEYS:
            assert key in f
        assert f["kind"] in (SPARING, DENSE) and len(f["centroid_ras"]) == 3
    json.dumps(s, allow_nan=False)
    lesion = [l for l in s["lesions"] if l["lesion"] == "liver lesion"][0]
    assert lesion["focal_finding"]["kind"] == SPARING
    assert lesion["focal_finding"]["overlap_fraction_of_lesion"] > 0.9
    assert "Found on the map as focal finding" in lesion["text"]
    matched = [f for f in findings if f["matched_lesion"] == "liver lesion"]
    assert len(matched) == 1
    liver = [r for r in s["regions"] if r["name"] == "liver"][0]
    assert liver["focal_findings_n"] == 3 and liver["heterogeneity_robust_cv"] > 0
    assert findings_label_map(findings, ph.labels.shape).max() == 3


def test_summarize_gives_an_empty_list_and_says_why_when_nothing_is_found():
    ph = make_phantom("transfusional", snr=40, seed=8)   # lesion isointense (650 = liver)
    result = fit(ph.image.signal, ph.image.echo_times_ms)
    s = summarize(result, ph.labels, ph.label_names, 1.5, signal=ph.image.signal,
                  echo_times_ms=ph.image.echo_times_ms, voxel_volume_ml=ph.image.voxel_volume_ml)
    assert s["focal_findings"] == []
    lesion = s["lesions"][0]
    assert lesion["focal_finding"] is None
    assert "isointense" in lesion["reading"] and "Not found as a focal finding" in lesion["text"]
    muscle_only = summarize(result, (ph.labels == 7).astype(int), {1: "skeletal muscle"}, 1.5)
    assert muscle_only["focal_findings"] == []
    assert "no liver, spleen, kidney or pancreas" in muscle_only["focal_analysis"]["notes"][0]
    skipped = summarize(result, ph.labels, ph.label_names, 1.5, focal=False)
    assert skipped["focal_findings"] == []


def test_focal_csv(tmp_path, dense):
    ph, result, _ = dense
    s = summarize(result, ph.labels, ph.label_names, 1.5, signal=ph.image)
    path = write_focal_csv(s, tmp_path / "focal_findings.csv")
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert len(rows) == 3
    assert {"Volume (mL)", "R2* median (1/s)", "Centroid S (mm)", "Field shift", "Reading"} <= set(rows[0])
    assert {r["Field shift"] for r in rows} == {"paramagnetic", "diamagnetic"}
    empty = write_focal_csv({"focal_findings": []}, tmp_path / "none.csv")
    assert empty.read_text().count("\n") == 1


def test_focal_phantom_keeps_the_plain_phantom_and_paints_exact_volumes():
    plain = make_phantom("normal", snr=30, coils=2, seed=9)
    same = make_focal_phantom("normal", focal_lesions=[], with_phase=False, snr=30, coils=2, seed=9)
    assert np.array_equal(plain.image.signal, same.image.signal)
    assert same.focal_truth == [] and not same.focal_map.any()
    ph = make_focal_phantom("normal", with_phase=False, snr=None)
    voxel = ph.image.voxel_volume_ml
    for t, spec in zip(ph.focal_truth, FOCAL_LESIONS["normal"]):
        assert abs(t["volume_ml"] - spec.volume_ml) <= voxel
        region = [v for v, n in LABELS.items() if n == spec.region][0]
        assert np.all(ph.labels[ph.focal_map == t["label_value"]] == region)
        assert np.allclose(ph.r2star[ph.focal_map == t["label_value"]], spec.r2star)
    with pytest.raises(InputError, match="unknown phantom region"):
        make_focal_phantom("normal", [FocalLesion("x", "brain", (0.5, 0.5, 0.5), 1.0, 100.0)])


def test_scattered_dark_voxels_are_noise_not_a_dense_focus():
    """A loaded liver at low SNR: many voxels too dark to fit, scattered; chance clusters of
    them must not become findings (they did before the dark-fraction rule)."""
    rng = np.random.default_rng(3)
    shape = (8, 50, 50)
    organ = np.zeros(shape, bool)
    organ[1:7, 5:45, 5:45] = True
    r2 = 600.0 + 60.0 * rng.standard_normal(shape)
    status = np.ones(shape, np.uint8)
    dark = rng.random(shape) < 0.15
    status[dark] = 0
    r2[dark] = np.nan
    areas, info = analyse_organ(r2, np.full(shape, 60.0), status, organ, 0.05)
    assert areas == []
    assert info["dark_fraction"] > 0.1
    assert any("not used as evidence of dense foci" in n for n in info["notes"])
    chance = analyse_organ(r2, np.full(shape, 60.0), status, organ, 0.05,
                           FocalOptions(max_dark_fraction=1.0))[0]
    assert chance and all(a["kind"] == DENSE for a in chance)


def test_field_shift_sign_on_a_single_slice():
    """One slice: no through-slice background term can be fitted (the fit used to fail)."""
    foci = [FocalLesion("iron", "liver", (0.40, 0.60, 0.5), 0.6, 200.0, 1.0),
            FocalLesion("calcium", "liver", (0.22, 0.60, 0.5), 0.6, 200.0, -1.0)]
    ph = make_focal_phantom("normal", foci, shape=(1, 96, 128), snr=30, seed=1)
    _, out = _run(ph, options={"min_volume_ml": 0.3})
    assert len(out["findings"]) == 2
    for f in out["findings"]:
        truth = ph.focal_truth[_match(f, ph)]
        assert f["field_shift"]["sign"] == truth["field_shift_sign"], f["field_shift"]


def test_pipeline_writes_focal_findings_csv_and_summary(tmp_path):
    """The CLI/pipeline outputs: the demo phantom's drawn lesion (60 in a liver of 450 1/s) is
    a focal finding in summary.json and focal_findings.csv, with its RAS centroid."""
    from IronMapping import pipeline

    result = pipeline.run_demo(tmp_path / "demo", report=False)
    path = result.files["focal_findings_csv"]
    assert path.name == "focal_findings.csv" and path.exists()
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert len(rows) == 1 and rows[0]["Kind"] == SPARING and rows[0]["Matched lesion"] == "liver lesion"
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text(encoding="utf-8"))
    finding = summary["focal_findings"][0]
    assert finding["region"] == "liver" and len(finding["centroid_ras"]) == 3
    assert "focal_findings.csv" in pipeline.planned_outputs("nrrd")
