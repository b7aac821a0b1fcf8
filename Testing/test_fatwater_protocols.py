"""Fat-water on real protocols: bipolar readouts, a spatially consistent field map, few echoes.

Simulated scans are built from the phantom's truth maps (PDFF, R2*, S0 per region) with a
smoothly varying field map of +-200 Hz, an initial phase, complex Gaussian noise and, for the
bipolar scans, an odd/even echo phase with a linear readout term.
"""

import warnings

import numpy as np
import pytest
from scipy import ndimage

from IronMapping.errors import InputError
from IronMapping.fatmodel import fat_phasor
from IronMapping.fatwater import fit_fatwater, fit_fatwater_complex_chunk
from IronMapping.fatwater.bipolar import check_readout, readout_from_metadata
from IronMapping.phantom import make_phantom

FATTY = {"liver": 0.2, "liver lesion": 0.2, "soft tissue": 0.9}
MUSCLE, LIVER, SOFT_TISSUE = 7, 1, 9


def complex_scan(te_ms=None, b0=1.5, snr=50.0, shape=(2, 64, 80), odd_even_deg=0.0,
                 slope_deg_per_voxel=0.0, field_max_hz=200.0, seed=1):
    """Complex multi-echo phantom [echo, k, j, i]; returns (z, te_ms, phantom, field_hz, sigma)."""
    ph = make_phantom("normal", shape=shape, field_strength_t=b0, snr=None, fat_fraction=FATTY)
    te = ph.image.echo_times_ms if te_ms is None else np.asarray(te_ms, dtype=float)
    k, j, i = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    field = field_max_hz * np.clip(0.6 * i + 0.5 * j * i + 0.4 * np.sin(2.5 * j), -1, 1)
    ff = ph.fat_fraction
    t = te[:, None, None, None] / 1000.0
    c = fat_phasor(te, b0)[:, None, None, None]
    z = (ph.s0 * ((1 - ff) + ff * c) * np.exp(-ph.r2star * t)
         * np.exp(1j * (2 * np.pi * field * t + 0.3 + 1.2 * j)))
    theta = np.radians(odd_even_deg + slope_deg_per_voxel * (np.arange(shape[2])
                                                             - (shape[2] - 1) / 2.0))
    z[1::2] *= np.exp(1j * theta)
    sigma = 1000.0 / snr
    rng = np.random.default_rng(seed)
    z = z + sigma * (rng.standard_normal(z.shape) + 1j * rng.standard_normal(z.shape))
    return z.astype(np.complex64), te, ph, field, sigma


def quiet_fit(*args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_fatwater(*args, **kwargs)
    return result, [str(w.message) for w in caught]


def region_median(values, ph, label):
    return float(np.nanmedian(values[ph.labels == label]))


def swapped_share(pdff, ph):
    """Share of tissue voxels whose PDFF is more than 20 points from the truth."""
    tissue = ph.labels > 0
    return float(np.mean(np.abs(pdff[tissue] - 100 * ph.fat_fraction[tissue]) > 20))


# ------------------------------------------------------------------------------ bipolar readout

def test_bipolar_phase_is_detected_estimated_and_removed():
    z, te, ph, _, sigma = complex_scan(odd_even_deg=55.0, slope_deg_per_voxel=1.2)
    mask = ph.labels > 0
    auto, messages = quiet_fit(np.abs(z), te, 1.5, mask=mask, complex_signal=z,
                               noise_sigma=sigma)
    assert auto.readout == "bipolar" and auto.readout_source == "detected from the data"
    est = auto.odd_even_phase
    assert np.degrees(est.offset_rad) == pytest.approx(55.0, abs=2.0)
    assert np.degrees(est.slopes_rad_per_voxel[2]) == pytest.approx(1.2, abs=0.05)
    assert abs(np.degrees(est.slopes_rad_per_voxel[1])) < 0.05
    assert any("Bipolar readout detected" in m for m in messages)
    prov = auto.provenance()
    assert prov["readout"] == "bipolar" and prov["odd_even_phase"]["detected"] is True
    for label in (LIVER, MUSCLE, SOFT_TISSUE):
        truth = 100 * ph.fat_fraction[ph.labels == label][0]
        assert region_median(auto.complex_maps["pdff"], ph, label) == pytest.approx(truth, abs=1.0)
    assert swapped_share(auto.complex_maps["pdff"], ph) < 0.002

    given, _ = quiet_fit(np.abs(z), te, 1.5, mask=mask, complex_signal=z, noise_sigma=sigma,
                         readout="bipolar")
    assert given.readout_source == "given"
    np.testing.assert_allclose(given.complex_maps["pdff"][mask], auto.complex_maps["pdff"][mask],
                               atol=0.5)
    # Told it is monopolar, nothing is corrected and the muscle reads fat that is not there.
    wrong, _ = quiet_fit(np.abs(z), te, 1.5, mask=mask, complex_signal=z, noise_sigma=sigma,
                         readout="monopolar")
    assert wrong.readout == "monopolar" and wrong.odd_even_phase is None
    assert region_median(wrong.complex_maps["pdff"], ph, MUSCLE) > 3.0


@pytest.mark.parametrize("te_ms", [None, 1.53 + 2.23 * np.arange(4)], ids=["12 echoes", "4 echoes"])
def test_monopolar_data_is_not_called_bipolar(te_ms):
    z, te, ph, _, sigma = complex_scan(te_ms=te_ms, snr=20.0)
    res, messages = quiet_fit(np.abs(z), te, 1.5, mask=ph.labels > 0, complex_signal=z,
                              noise_sigma=sigma)
    assert res.readout == "monopolar"
    assert res.readout_source.startswith("detected from the data")
    assert not any("Bipolar" in m for m in messages)


def test_readout_argument_and_metadata():
    assert check_readout("auto") == "auto"
    with pytest.raises(InputError, match="monopolar"):
        check_readout("flyback")
    z, te, ph, _, _ = complex_scan(shape=(1, 16, 16))
    with pytest.raises(InputError, match="readout"):
        fit_fatwater(np.abs(z), te, 1.5, complex_signal=z, readout="odd")
    assert readout_from_metadata({"readout": "Bipolar"}) == "bipolar"
    assert readout_from_metadata({"sidecar": {"ReadoutPolarity": "flyback"}}) == "monopolar"
    assert readout_from_metadata({"bipolar": False}) == "monopolar"
    assert readout_from_metadata({"manufacturer": "GE"}) is None
    assert readout_from_metadata(None) is None


# ------------------------------------------------------------------------------ field map

def test_spatial_field_map_removes_the_swaps_of_the_voxel_wise_fit():
    # 6 echoes, dTE 2 ms, SNR 15, field map +-200 Hz: the voxel-wise fit swaps a few per cent.
    z, te, ph, field, sigma = complex_scan(te_ms=1.2 + 2.0 * np.arange(6), snr=15.0)
    mask = ph.labels > 0
    voxel = fit_fatwater_complex_chunk(z[:, mask], te / 1000.0, field_strength_t=1.5)
    voxel_pdff = np.full(mask.shape, np.nan)
    voxel_pdff[mask] = voxel["pdff"]
    res, _ = quiet_fit(np.abs(z), te, 1.5, mask=mask, complex_signal=z, noise_sigma=sigma)
    assert swapped_share(voxel_pdff, ph) > 0.01
    assert swapped_share(res.complex_maps["pdff"], ph) < 0.002
    period = 1000.0 / 2.0
    error = (res.complex_maps["fieldmap_hz"] - field + period / 2) % period - period / 2
    assert np.median(np.abs(error[mask])) < 3.0
    assert "multi-resolution" in res.provenance()["fieldmap"]


def test_kellman_complex_pdff_has_no_swap_patches(shared_data):
    path = shared_data / "kellman-fatwater" / "PKdata9.mat"
    if not path.is_file():
        pytest.skip(f"{path} not found (set IRONMAPPING_TEST_DATA)")
    from scipy.io import loadmat

    data = loadmat(path, squeeze_me=True, struct_as_record=False)["data"]
    z = np.moveaxis(np.asarray(data.images), -1, 0)
    te_ms = np.asarray(data.TE, dtype=float) * 1000.0
    b0 = float(data.FieldStrength)
    first = np.abs(z[0])
    tissue = first > 0.1 * np.percentile(first, 99)
    res, _ = quiet_fit(np.abs(z), te_ms, b0, mask=tissue, complex_signal=z)
    assert res.readout == "monopolar"
    voxel = fit_fatwater_complex_chunk(z[:, tissue], te_ms / 1000.0, field_strength_t=b0)
    voxel_pdff = np.full(tissue.shape, np.nan)
    voxel_pdff[tissue] = voxel["pdff"]
    # 8 echoes: where the magnitude is clear (not ambiguous, PDFF < 20 or > 80 %) it says on
    # which side of 50 % a voxel lies; a complex PDFF clearly on the other side is a swap.
    magnitude = res.pdff
    clear = tissue & (res.ambiguous == 0) & (np.abs(magnitude - 50) > 30)

    def largest_swap_patch(pdff):
        swapped = clear & (np.abs(pdff - 50) > 30) & ((pdff > 50) != (magnitude > 50))
        labels, count = ndimage.label(swapped, structure=np.ones((3, 3)))
        return int(np.bincount(labels.ravel())[1:].max()) if count else 0

    assert largest_swap_patch(voxel_pdff) > 100
    assert largest_swap_patch(res.complex_maps["pdff"]) <= 20
    liver = (slice(145, 175), slice(45, 85))
    assert np.nanmedian(res.complex_maps["pdff"][liver]) == pytest.approx(
        np.nanmedian(res.pdff[liver]), abs=2.0)


# ------------------------------------------------------------------------------ few echoes

def _kellman_few_echoes(shared_data, n_echoes):
    path = shared_data / "kellman-fatwater" / "PKdata9.mat"
    if not path.is_file():
        pytest.skip(f"{path} not found (set IRONMAPPING_TEST_DATA)")
    from scipy.io import loadmat

    data = loadmat(path, squeeze_me=True, struct_as_record=False)["data"]
    z = np.moveaxis(np.asarray(data.images), -1, 0)
    te_ms = np.asarray(data.TE, dtype=float) * 1000.0
    b0 = float(data.FieldStrength)
    first = np.abs(z[0])
    tissue = first > 0.1 * np.percentile(first, 99)
    full, _ = quiet_fit(np.abs(z), te_ms, b0, mask=tissue, complex_signal=z)
    # Fat as all 8 echoes read it, magnitude and complex agreeing (subcutaneous fat).
    fat = tissue & (full.pdff > 80) & (full.complex_maps["pdff"] > 80)
    assert fat.sum() > 1000
    return z[:n_echoes], te_ms[:n_echoes], b0, tissue, fat


@pytest.mark.parametrize("n_echoes", [3, 4])
def test_few_echo_magnitude_says_where_fat_and_water_cannot_be_told_apart(shared_data,
                                                                          n_echoes):
    z, te_ms, b0, tissue, fat = _kellman_few_echoes(shared_data, n_echoes)
    magnitude, messages = quiet_fit(np.abs(z), te_ms, b0, mask=tissue)
    # The magnitude reads the fat as its water-dominant mirror ...
    assert np.nanmedian(magnitude.pdff[fat]) < 50.0
    # ... and says so, per voxel and in words.
    assert np.nanmean(magnitude.maps["fat_water_ambiguous"][fat]) > 0.9
    assert any("cannot tell water-dominant from fat-dominant" in m for m in messages)
    assert set(np.unique(magnitude.ambiguous[tissue])) <= {0.0, 1.0}
    assert np.all(np.isnan(magnitude.ambiguous[~tissue]))
    # With the phase, the complex fit decides and the magnitude solution follows it.
    both, _ = quiet_fit(np.abs(z), te_ms, b0, mask=tissue, complex_signal=z)
    assert np.nanmedian(both.complex_maps["pdff"][fat]) > 75.0
    assert np.nanmedian(both.pdff[fat]) > 75.0
    assert np.nanmedian(both.r2star[fat]) < np.nanmedian(magnitude.r2star[fat])
    assert np.nanmean(both.ambiguous[fat]) < 0.05


def test_flags_follow_the_evidence_on_a_12_echo_phantom():
    # 12 echoes, SNR 50: water-dominant tissue is told apart from its mirror by tens of nats;
    # 90 % fat (R2* 20 1/s) only by a few, so part of it is reported as its ~20 % mirror:
    # exactly those voxels must carry the flag.
    ph = make_phantom("normal", shape=(2, 48, 64), snr=50.0, fat_fraction=FATTY, seed=3)
    res, messages = quiet_fit(ph.image.signal, ph.image.echo_times_ms, 1.5,
                              mask=ph.labels > 0, noise_sigma=ph.noise_sigma)
    water_dominant = (ph.labels > 0) & (ph.fat_fraction <= 0.2)
    assert np.mean(res.ambiguous[water_dominant] == 1) < 0.005
    fat = ph.labels == SOFT_TISSUE
    mirrored = fat & (res.pdff < 50)
    assert mirrored.sum() > 10
    assert np.mean(res.ambiguous[mirrored] == 1) > 0.9
    assert region_median(res.pdff, ph, SOFT_TISSUE) == pytest.approx(90.0, abs=1.5)
    assert any("cannot tell" in m for m in messages)


def test_three_echo_phantom_flags_every_voxel_whose_two_solutions_differ():
    ph = make_phantom("normal", shape=(2, 32, 40), echo_times_ms=[1.2, 3.2, 5.2], snr=100.0,
                      fat_fraction=FATTY, seed=4)
    res, messages = quiet_fit(ph.image.signal, ph.image.echo_times_ms, 1.5, mask=ph.labels > 0)
    assert res.start_selection == "neighbourhood"
    assert np.nanmean(res.ambiguous[ph.labels == SOFT_TISSUE]) > 0.9
    assert any("with 3 echoes" in m for m in messages)
    assert "fat_water_ambiguous" in res.maps


@pytest.mark.parametrize("te_ms", [[1.2, 3.2, 5.2], 1.53 + 2.23 * np.arange(4), [1.0, 2.0, 3.0, 4.0]],
                         ids=["3 echoes", "4 echoes dTE 2.23", "4 echoes dTE 1"])
@pytest.mark.parametrize("noise", ["given", "estimated"])
def test_few_echo_magnitude_flags_every_wrong_voxel(te_ms, noise):
    # 90 % fat (R2* 20 1/s) beside muscle and 20 % PDFF liver: with 3-4 echoes the magnitude
    # barely separates the fat from its ~20-28 % mirror. Where it reads the mirror it must say
    # so, also at the edge of the fat, where neighbours of other tissue hold decisive evidence
    # for their own (other) solutions.
    z, te, ph, _, sigma = complex_scan(te_ms=te_ms, snr=50.0)
    mask = ph.labels > 0
    kwargs = {"noise_sigma": sigma} if noise == "given" else {}
    res, messages = quiet_fit(np.abs(z), te, 1.5, mask=mask, **kwargs)
    assert res.start_selection == "neighbourhood"
    wrong = mask & (np.abs(res.pdff - 100 * ph.fat_fraction) > 20)
    assert wrong.sum() > 1000
    assert np.mean(res.ambiguous[wrong] == 1) > 0.98
    assert any("cannot tell water-dominant from fat-dominant" in m for m in messages)
    if noise == "estimated" and len(te) == 3:
        # Exact fits and no noise level: no evidence at all, the water-dominant solution.
        assert np.all(res.start[mask] == 0)
    # Muscle is not mistaken and its evidence does not leak into the fat next to it.
    assert region_median(res.pdff, ph, MUSCLE) < 3.0


@pytest.mark.parametrize("te_ms", [[1.2, 3.2, 5.2], 1.53 + 2.23 * np.arange(4), [1.0, 2.0, 3.0, 4.0]],
                         ids=["3 echoes", "4 echoes dTE 2.23", "4 echoes dTE 1"])
def test_few_echo_phase_decides_the_fat(te_ms):
    z, te, ph, _, sigma = complex_scan(te_ms=te_ms, snr=50.0)
    mask = ph.labels > 0
    res, messages = quiet_fit(np.abs(z), te, 1.5, mask=mask, complex_signal=z)
    assert region_median(res.pdff, ph, SOFT_TISSUE) == pytest.approx(90.0, abs=2.0)
    assert region_median(res.complex_maps["pdff"], ph, SOFT_TISSUE) == pytest.approx(90.0, abs=2.0)
    assert region_median(res.pdff, ph, LIVER) == pytest.approx(20.0, abs=1.5)
    assert swapped_share(res.pdff, ph) < 0.002
    assert np.nanmean(res.ambiguous[mask] == 1) < 0.01


def test_relaxometry_fit_fat_water_uses_the_spatial_fit_and_the_phase():
    """relaxometry.fit(method="fat-water") is the whole-image fat-water fit (neighbourhood
    starts, complex fit where phase is given), not a voxel-by-voxel magnitude kernel."""
    from IronMapping.relaxometry import Status, fit

    z, te, ph, _, sigma = complex_scan(te_ms=1.53 + 2.23 * np.arange(4), snr=50.0)
    mask = ph.labels > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole, _ = quiet_fit(np.abs(z), te, 1.5, mask=mask, complex_signal=z, noise_sigma=sigma)
        res = fit(np.abs(z), te, method="fat-water", mask=mask, noise_sigma=sigma, coils=1,
                  field_strength_t=1.5, complex_signal=z)
        magnitude = fit(np.abs(z), te, method="fat-water", mask=mask, noise_sigma=sigma, coils=1,
                        field_strength_t=1.5)
    fitted = res.status == Status.FITTED
    np.testing.assert_allclose(res.maps["pdff"][fitted], whole.pdff[fitted], rtol=1e-5, atol=1e-4)
    assert region_median(res.maps["pdff"], ph, SOFT_TISSUE) == pytest.approx(90.0, abs=2.0)
    # without phase the four echoes cannot tell the fat from its mirror: it is flagged
    soft = ph.labels == SOFT_TISSUE
    assert np.nanmean(magnitude.maps["fat_water_ambiguous"][soft]) > 0.5
    with pytest.raises(InputError):
        fit(np.abs(z), te, mask=mask, complex_signal=z)
