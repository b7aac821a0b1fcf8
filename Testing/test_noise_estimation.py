"""Noise from the echo train, background purity, noise maps, the body mask and fit options."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from IronMapping import echo_noise
from IronMapping.errors import InputError
from IronMapping.fatmodel import fat_phasor
from IronMapping.noise_source import background_purity, resolve_noise
from IronMapping.phantom import make_phantom, noncentral_chi
from IronMapping.phantom_abdomen import make_acquisition
from IronMapping.relaxometry import Status, fit


def quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit(*args, **kwargs)


@pytest.mark.parametrize("d", [2, 4, 10])
def test_log_mode_of_pure_chi_square_is_unbiased(d):
    rng = np.random.default_rng(d)
    values = [np.exp(0.5 * echo_noise.pooled_log_mode(np.log(rng.chisquare(d, 20000) / d), np.full(20000, d)))
              for _ in range(5)]
    assert np.mean(values) == pytest.approx(1.0, abs=0.02)


def test_log_mode_is_not_moved_by_an_inflated_tail():
    rng = np.random.default_rng(0)
    clean = rng.chisquare(10, 30000) / 10
    misfit = clean[:10000] * rng.uniform(3, 30, 10000)      # a third of the voxels misfit
    mixed = np.concatenate([clean[10000:], misfit])
    mode = np.exp(0.5 * echo_noise.pooled_log_mode(np.log(mixed), np.full(mixed.size, 10)))
    mean = np.sqrt(mixed.mean())
    assert mode == pytest.approx(1.0, abs=0.04) and mean > 2.0


def test_misfit_growing_with_the_signal_is_separated_from_the_noise():
    rng = np.random.default_rng(1)
    n, d, sigma2 = 24000, 9, 4.0
    amplitude2 = rng.uniform(10, 2000, n) ** 2
    variance = sigma2 * rng.chisquare(d, n) / d + 0.002 * amplitude2  # 4.5 % relative misfit
    pooled = np.exp(echo_noise.pooled_log_mode(np.log(variance), np.full(n, d)))
    s2, c2 = echo_noise.separate_misfit(variance, np.full(n, d), amplitude2)
    assert pooled > 5 * sigma2
    assert s2 < 0.3 * pooled and c2 == pytest.approx(0.002, rel=0.3)


@pytest.mark.parametrize("coils, fat", [(1, None), (4, None), (8, 0.2)])
def test_echo_train_sigma_without_any_air(coils, fat):
    ph = make_phantom("transfusional", shape=(8, 96, 128), snr=40, coils=coils, fat_fraction=fat, seed=1)
    y = ph.image.signal.reshape(ph.image.n_echoes, -1)
    body = ph.labels.reshape(-1) > 0
    est = echo_noise.estimate_noise_echo_train(y, ph.image.echo_times_ms / 1000.0, body,
                                               ph.image.signal.shape[1:])
    assert est.sigma == pytest.approx(ph.noise_sigma, rel=0.03)
    assert est.sigma_map is None
    assert est.coils == pytest.approx(coils, rel=0.15)


@pytest.mark.parametrize("coils", [4, 8, 12])
def test_coil_count_from_the_decay_shape_ignores_voxels_no_exponential_fits(coils):
    """No floor samples at all: L from the decay curves alone, with a tenth of the voxels
    oscillating like fatty marrow (their misfit must not set L)."""
    rng = np.random.default_rng(coils)
    t = np.arange(1, 13) * 1e-3
    n = 6000
    r2 = rng.uniform(120, 200, n)
    s0 = rng.uniform(800, 1200, n)
    fatty = np.arange(n) < n // 10
    fat_fraction = np.where(fatty, 0.4, 0.0)
    amplitude = s0 * np.abs(1 - fat_fraction + fat_fraction * fat_phasor(t * 1e3, 1.5)[:, None]) \
        * np.exp(-np.outer(t, r2))
    sigma = 25.0
    y = noncentral_chi(amplitude, sigma, coils, rng)
    estimate = echo_noise.coils_from_decay(y, t, sigma)
    assert estimate == pytest.approx(coils, rel=0.15)


def test_background_purity_recognises_zeros_decay_and_tissue():
    rng = np.random.default_rng(2)
    pure = noncentral_chi(np.zeros((8, 20000)), 10.0, 4, rng)
    verdict = background_purity(pure)
    assert verdict["pure"] and verdict["coils"] == pytest.approx(4, rel=0.15)
    zeroed = pure.copy()
    zeroed[:, :15000] = 0
    assert "zero" in background_purity(zeroed)["why"]
    decaying = noncentral_chi(200.0 * np.exp(-0.3 * np.arange(8))[:, None] * np.ones((8, 20000)), 10.0, 1, rng)
    assert not background_purity(decaying)["pure"]



def test_faint_tissue_in_the_air_is_not_taken_for_many_coil_noise():
    from IronMapping.echo_noise import EchoTrainNoise
    from IronMapping.noise_source import air_level_plausible

    rng = np.random.default_rng(3)
    faint = noncentral_chi(np.full((8, 20000), 80.0), 10.0, 1, rng)   # flat, so it passes the shape test
    verdict = background_purity(faint)
    tissue_noise = EchoTrainNoise(sigma=10.0, sigma_map=None, n_voxels=1000)
    assert not air_level_plausible(faint, verdict["coils"], tissue_noise)
    pure = noncentral_chi(np.zeros((8, 20000)), 10.0, 16, rng)
    assert air_level_plausible(pure, background_purity(pure)["coils"], tissue_noise)


def test_filtered_air_is_not_used_and_the_warning_says_why():
    ph = make_phantom("normal", shape=(6, 96, 128), snr=40, coils=1, seed=3)
    signal = ph.image.signal.copy()
    air = ph.labels == 0
    signal[:, air] *= 0.5                                  # vendor-filtered background
    result = quiet(signal, ph.image.echo_times_ms)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(signal, ph.image.echo_times_ms)
    assert result.noise_source == "echo train"
    assert result.noise_sigma == pytest.approx(ph.noise_sigma, rel=0.05)
    assert any("differs" in str(w.message) for w in caught)
    estimates = result.provenance()["noise_estimates"]
    assert estimates["background_sigma"] == pytest.approx(0.5 * ph.noise_sigma, rel=0.1)
    assert estimates["echo_train_sigma"] == pytest.approx(ph.noise_sigma, rel=0.05)


def test_pure_air_that_agrees_is_used():
    ph = make_phantom("normal", shape=(6, 96, 128), snr=40, coils=4, seed=4)
    result = quiet(ph.image.signal, ph.image.echo_times_ms)
    assert result.noise_source == "background"
    assert result.noise_sigma == pytest.approx(ph.noise_sigma, rel=0.05)
    assert result.coils == pytest.approx(4, rel=0.1)


def test_parallel_imaging_gets_a_noise_map_and_an_unbiased_liver():
    ph = make_acquisition("parallel-imaging", quick=True, seed=5)
    result = quiet(ph.image.signal, ph.image.echo_times_ms)
    assert result.noise_source == "echo train (noise map)"
    liver = ph.mask("liver")
    local = np.median(result.noise_sigma_map[liver] / ph.noise_sigma_map[liver])
    assert local == pytest.approx(1.0, abs=0.15)
    lo, hi = result.noise_sigma_range()
    assert hi / lo > 1.2
    fitted = liver & (result.status == Status.FITTED)
    assert np.median(result.r2star[fitted]) == pytest.approx(ph.truth_median("liver"), rel=0.05)


def test_a_given_noise_map_is_used_voxel_by_voxel():
    ph = make_acquisition("parallel-imaging", quick=True, seed=6)
    result = quiet(ph.image.signal, ph.image.echo_times_ms, noise_sigma=ph.noise_sigma_map, coils=ph.coils)
    assert result.noise_source == "given"
    np.testing.assert_allclose(result.noise_sigma_map, ph.noise_sigma_map, rtol=1e-6)
    fitted = ph.mask("liver") & (result.status == Status.FITTED)
    assert np.median(result.r2star[fitted]) == pytest.approx(ph.truth_median("liver"), rel=0.03)
    with pytest.raises(InputError, match="spatial shape"):
        fit(ph.image.signal, ph.image.echo_times_ms, noise_sigma=np.ones(5))


def test_dark_iron_loaded_liver_is_inside_the_body_not_air():
    ph = make_acquisition("severe-2000", quick=True, seed=7)
    result = quiet(ph.image.signal, ph.image.echo_times_ms)
    assert not np.any(result.status[ph.mask("liver")] == Status.MASKED)
    assert not np.any(result.status[ph.mask("spleen")] == Status.MASKED)


def test_a_hot_pixel_gets_its_own_status_and_changes_nothing_else():
    ph = make_phantom("transfusional", shape=(4, 64, 80), snr=40, coils=1, seed=8)
    clean = quiet(ph.image.signal, ph.image.echo_times_ms)
    signal = ph.image.signal.copy()
    spot = (2, 30, 40)
    signal[(0,) + spot] = 20 * signal.max()
    hot = quiet(signal, ph.image.echo_times_ms)
    assert hot.status[spot] == Status.OUTLIER
    others = np.ones(hot.status.shape, bool)
    others[spot] = False
    assert hot.noise_sigma == pytest.approx(clean.noise_sigma, rel=0.01)
    assert np.mean(hot.status[others] == clean.status[others]) > 0.999


def test_segment_voxels_are_fitted_whatever_the_automatic_mask_says():
    ph = make_phantom("normal", shape=(4, 64, 80), snr=40, coils=1, seed=9)
    signal = ph.image.signal
    organ = np.zeros(ph.labels.shape, bool)
    organ[:, :6, :6] = True                                          # drawn in the air
    assert not np.any(ph.labels[organ])
    masked = quiet(signal, ph.image.echo_times_ms)
    assert np.mean(masked.status[organ] == Status.MASKED) > 0.9
    kept = quiet(signal, ph.image.echo_times_ms, include_mask=organ)
    assert not np.any(kept.status[organ] == Status.MASKED)


def test_nan_in_the_first_echo_is_invalid_not_background():
    ph = make_phantom("normal", shape=(4, 64, 80), snr=40, coils=1, seed=10)
    signal = ph.image.signal.copy()
    signal[0, 1, 2, 3] = np.nan                                     # in the air
    signal[0, 2, 32, 40] = np.nan                                   # in tissue
    result = quiet(signal, ph.image.echo_times_ms)
    assert result.status[1, 2, 3] == Status.INVALID_SIGNAL
    assert result.status[2, 32, 40] == Status.INVALID_SIGNAL


def test_unknown_fit_options_and_empty_masks_are_refused():
    signal = np.exp(-np.arange(1, 7)[:, None] * 0.05) * np.ones((6, 4)) * 100
    te = np.arange(1, 7, dtype=float)
    with pytest.raises(InputError, match="bogus_option.*Valid options.*workers"):
        fit(signal, te, noise_sigma=1.0, bogus_option=3)
    with pytest.raises(InputError, match="selects no voxel"):
        fit(signal, te, noise_sigma=1.0, mask=np.zeros(4, bool))


def test_resolve_noise_reports_every_estimate():
    ph = make_phantom("normal", shape=(4, 64, 80), snr=40, coils=1, seed=11)
    y = ph.image.signal.reshape(ph.image.n_echoes, -1)
    noise, _ = resolve_noise(y, None, None, None, ph.image.signal.shape[1:], ph.image.echo_times_ms / 1000)
    for key in ("echo_train_sigma", "background_sigma", "background_moment_ratio", "coils_source"):
        assert key in noise.details
    assert noise.details["echo_train_sigma"] == pytest.approx(ph.noise_sigma, rel=0.05)


@pytest.mark.parametrize("shape", [(40, 50), (6, 40, 50), (2, 3, 30, 40)])
def test_body_filling_equals_filling_holes_per_slice_then_in_3d(shape):
    """fill_body labels the background once; it must equal scipy's hole filling in every
    slice (slices not treated as border) followed by hole filling in 3-D."""
    from scipy import ndimage

    from IronMapping.tissue_mask import fill_body

    rng = np.random.default_rng(len(shape))
    for density in (0.3, 0.6, 0.9):
        mask = ndimage.binary_opening(rng.random(shape) < density) | (rng.random(shape) < 0.5 * density)
        expected = mask
        if mask.ndim >= 3:
            lead = mask.ndim - 2
            structure = np.zeros((3,) * mask.ndim, bool)
            structure[(1,) * lead] = ndimage.generate_binary_structure(2, 1)
            padded = np.pad(mask, [(1, 1)] * lead + [(0, 0), (0, 0)], constant_values=True)
            expected = ndimage.binary_fill_holes(padded, structure)[tuple([slice(1, -1)] * lead)]
        expected = ndimage.binary_fill_holes(expected)
        assert np.array_equal(fill_body(mask), expected)


def test_noise_map_at_sampled_voxels_equals_the_full_interpolated_map():
    rng = np.random.default_rng(3)
    for spatial, tile in [((5, 128, 168), (4, 13, 13)), ((1, 64, 80), (1, 9, 9))]:
        grid = tuple(-(-n // s) for n, s in zip(spatial, tile))
        tiles = echo_noise.TileMap(rng.normal(0, 0.5, grid).astype(np.float32), tile, spatial)
        full = tiles.full()
        assert full.shape == (int(np.prod(spatial)),)
        index = rng.integers(0, full.size, 4000)
        np.testing.assert_allclose(tiles.at(index), full[index], rtol=1e-5)


@pytest.mark.parametrize("name, quick, seed", [("three-echo", False, 0), ("three-echo", True, 11), ("cropped", False, 0)])
def test_uniform_noise_gets_no_map_from_the_tiles_sampling_noise(name, quick, seed):
    """With one residual degree of freedom per voxel (three echoes) the tiles scatter by
    several per cent by chance alone; a map made from that scatter only adds noise."""
    ph = make_acquisition(name, quick=quick, seed=seed)
    result = quiet(ph.image.signal, ph.image.echo_times_ms)
    assert result.noise_sigma_map is None
    assert result.noise_sigma == pytest.approx(ph.noise_sigma, rel=0.04)


def test_background_purity_counts_zeros_and_decay_as_before_on_float32_air():
    rng = np.random.default_rng(5)
    air = noncentral_chi(np.zeros((8, 20000)), 10.0, 1, rng).astype(np.float32)
    pure = background_purity(air)
    assert pure["pure"] and pure["zero_share"] == 0.0
    assert pure["moment_ratio"] == pytest.approx(np.pi / 4, abs=0.01)
    air[:, :12000] = 0.0                      # scanner zero-filling
    assert background_purity(air)["zero_share"] == pytest.approx(0.6)
    fading = noncentral_chi(np.zeros((8, 20000)), 10.0, 1, rng)
    fading[4:] *= 0.88                        # late echoes 23 % lower in power: not pure noise
    assert "decays" in background_purity(fading.astype(np.float32))["why"]


def test_floor_samples_survive_fat_that_fakes_a_fast_decay():
    # 1.5 T, 1 ms echo spacing: fat near the opposed-phase second echo makes two leading echoes
    # look like a fast decay whose in-phase echoes still hold signal; the floor is then taken
    # from the later echoes, where that signal has died away, not given up.
    from IronMapping import noise_floor

    rng = np.random.default_rng(4)
    n, sigma = 40_000, 20.0
    te_ms = 1.0 * np.arange(1, 13)
    r2 = np.exp(rng.uniform(np.log(25.0), np.log(1000.0), n))
    pdff = rng.uniform(0.0, 0.5, n)
    c = fat_phasor(te_ms, 1.5)
    amplitude = 1000.0 * np.abs((1 - pdff)[None] + pdff[None] * c[:, None]) * np.exp(-np.outer(te_ms / 1e3, r2))
    y = noncentral_chi(amplitude, sigma, 1, rng)
    samples, columns = noise_floor.floor_samples(y, te_ms / 1e3, sigma, 1.0)
    assert samples.size >= noise_floor.MIN_FLOOR_SAMPLES
    # the floor level 2 L sigma^2 with L = 1, to within the 15 % the decay test tolerates
    assert np.mean(samples ** 2) / (2.0 * sigma ** 2) == pytest.approx(1.0, abs=0.15)
