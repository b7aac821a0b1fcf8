"""The relaxometry engine: exactness, noise-floor handling, statuses, bad input, cancellation."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from IronMapping.errors import EchoTimeError, FitCancelled, InputError, IronMappingError
from IronMapping.phantom import make_phantom, noncentral_chi
from IronMapping.reference_fit import fit_voxel_ml
from IronMapping.relaxometry import METHODS, Status, check_echo_times, fit

TE = 1.0 * np.arange(1, 13)
EXACT = ["loglinear", "nlls", "offset", "truncation", "noise-corrected", "noise-corrected-ml", "ml"]
R2_VALUES = np.array([10.0, 50.0, 200.0, 800.0, 1500.0])


def decay(r2, te=TE, s0=1000.0):
    return s0 * np.exp(-np.outer(np.asarray(te) / 1000.0, r2))


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.mark.parametrize("method", EXACT)
def test_noiseless_recovery_is_exact(method):
    signal = decay(R2_VALUES)
    result = fit(signal, TE, method=method, mask=np.ones(R2_VALUES.size, bool), noise_sigma=1e-4)
    assert np.all(result.status == Status.FITTED)
    np.testing.assert_allclose(result.r2star, R2_VALUES, rtol=1e-6)
    np.testing.assert_allclose(result.t2star, 1000.0 / R2_VALUES, rtol=1e-6)
    np.testing.assert_allclose(result.s0, 1000.0, rtol=1e-5)
    np.testing.assert_allclose(result.quality, 1.0, atol=1e-6)


def test_arlo_noiseless_close_and_documented_simpson_error():
    # ARLO integrates with Simpson's rule, so it is exact only as dTE * R2* -> 0.
    r2 = np.array([10.0, 50.0, 200.0])
    result = fit(decay(r2), TE, method="arlo", mask=np.ones(3, bool))
    np.testing.assert_allclose(result.r2star, r2, rtol=2e-4)


def test_nonuniform_spacing_arlo_refuses_others_work():
    te = np.array([1.0, 2.0, 3.5, 5.5, 8.0, 11.0])
    signal = decay(np.array([100.0, 400.0]), te)
    with pytest.raises(EchoTimeError, match="uniformly spaced"):
        fit(signal, te, method="arlo")
    for method in ("loglinear", "nlls", "noise-corrected", "truncation", "ml", "offset"):
        result = fit(signal, te, method=method, mask=np.ones(2, bool), noise_sigma=1e-4)
        np.testing.assert_allclose(result.r2star, [100.0, 400.0], rtol=1e-6)


def test_two_echoes_fit_where_the_model_allows():
    te = np.array([1.2, 4.0])
    signal = decay(np.array([60.0, 300.0]), te)
    for method in ("loglinear", "nlls", "noise-corrected", "ml", "truncation"):
        result = fit(signal, te, method=method, mask=np.ones(2, bool), noise_sigma=1e-4)
        np.testing.assert_allclose(result.r2star, [60.0, 300.0], rtol=1e-6)
    for method in ("offset", "arlo"):
        with pytest.raises(EchoTimeError, match="at least 3 echoes"):
            fit(signal, te, method=method)


@pytest.mark.parametrize("te, match", [
    ([1.0, 3.0, 2.0, 4.0], "increasing order"),
    ([1.0, 2.0, 2.0, 4.0], "Duplicate"),
    ([0.001, 0.002, 0.003, 0.004], "seconds"),
    ([1.0, 2.0, 3.0], "one echo time"),
    ([1.0, np.nan, 3.0, 4.0], "finite"),
    (None, "No echo times"),
])
def test_bad_echo_times_raise_clear_errors(te, match):
    signal = decay(np.array([100.0]), [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(EchoTimeError, match=match) as info:
        fit(signal, te)
    assert isinstance(info.value, IronMappingError)


def test_single_echo_is_refused():
    with pytest.raises(EchoTimeError, match="at least two echoes"):
        check_echo_times([2.0], 1)


def test_other_bad_input():
    signal = decay(np.array([100.0, 200.0]))
    with pytest.raises(InputError, match="Unknown method"):
        fit(signal, TE, method="magic")
    with pytest.raises(InputError, match="mask has shape"):
        fit(signal, TE, mask=np.ones(3, bool))
    with pytest.raises(InputError, match="magnitude"):
        fit(signal.astype(complex), TE)
    with pytest.raises(InputError, match="echo axis first"):
        fit(signal[:, 0], TE)
    with pytest.raises(InputError, match="noise_sigma"):
        fit(signal, TE, noise_sigma=-1.0)
    with pytest.raises(InputError, match="field_strength_t"):
        fit(signal, TE, method="fat-water")
    with pytest.raises(InputError, match="no positive values"):
        fit(np.zeros((12, 4, 4)), TE)
    with pytest.raises(InputError, match="no positive values"):
        fit(np.full((12, 3), np.nan), TE)


def test_invalid_and_empty_voxels_get_status_not_crash():
    signal = decay(np.full(6, 100.0))
    signal[3, 0] = np.nan          # NaN in one echo
    signal[5, 1] = -4.0            # negative magnitude
    signal[:, 2] = 0.0             # no signal at all
    signal[1:, 3] = 0.0            # only one echo with signal
    signal[:, 4] = np.inf
    result = fit(signal, TE, mask=np.ones(6, bool), noise_sigma=1.0)
    assert list(result.status) == [Status.INVALID_SIGNAL, Status.INVALID_SIGNAL,
                                   Status.TOO_FEW_ECHOES, Status.TOO_FEW_ECHOES,
                                   Status.INVALID_SIGNAL, Status.FITTED]
    assert np.all(np.isnan(result.r2star[:5]))
    assert result.r2star[5] == pytest.approx(100.0, rel=1e-4)
    for code in Status:
        assert Status.describe(code)


def test_constant_signal_gives_zero_r2star():
    signal = np.full((12, 4), 500.0)
    result = fit(signal, TE, mask=np.ones(4, bool), noise_sigma=1.0, method="nlls")
    np.testing.assert_allclose(result.r2star, 0.0, atol=1e-6)
    assert np.all(result.status == Status.FITTED)
    assert np.all(np.isnan(result.t2star))  # no measurable decay


def test_t2star_undefined_where_r2star_is_zero_to_fit_precision():
    from IronMapping.relaxometry import t2star_from_r2star

    r2 = np.array([4.8e-28, 0.0, -1e-3, 1e-9, 0.5, 50.0])
    status = np.full(r2.shape, int(Status.FITTED))
    t2 = t2star_from_r2star(r2, status, TE)
    assert np.all(np.isnan(t2[:4]))
    np.testing.assert_allclose(t2[4:], [2000.0, 20.0], rtol=1e-6)
    status[-1] = int(Status.NOT_CONVERGED)
    assert np.isnan(t2star_from_r2star(r2, status, TE)[-1])


finite_or_odd = st.one_of(st.floats(0, 5000, allow_nan=False, width=32), st.just(0.0), st.just(np.nan),
                          st.floats(-100, 0, width=32), st.just(np.inf))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=hnp.arrays(np.float32, (6, 5), elements=finite_or_odd),
       method=st.sampled_from(["auto", "loglinear", "nlls", "truncation", "ml", "arlo", "offset"]))
def test_any_values_give_valid_maps(data, method):
    te = 1.5 * np.arange(1, 7)
    if not np.any(data > 0):
        with pytest.raises(InputError, match="no positive values"):
            fit(data, te, method=method, mask=np.ones(5, bool), noise_sigma=3.0)
        return
    result = fit(data, te, method=method, mask=np.ones(5, bool), noise_sigma=3.0)
    assert result.r2star.shape == result.status.shape == (5,)
    assert set(np.unique(result.status)) <= {int(s) for s in Status}
    fitted = result.status == Status.FITTED
    assert np.all(np.isfinite(result.r2star[fitted]))
    assert np.all(np.isnan(result.r2star[~fitted]))
    bad = ~np.all(np.isfinite(data) & (data >= 0), axis=0)
    assert np.all(result.status[bad] == Status.INVALID_SIGNAL)


def test_phantom_regions_match_truth_default_method():
    ph = make_phantom("neonatal-haemochromatosis", snr=50, coils=8, seed=3)
    result = fit(ph.image.signal, ph.image.echo_times_ms)
    assert result.method == "noise-corrected-ml" and result.requested_method == "auto"
    assert result.noise_source == "background"
    # 2 L sigma^2 is what the noise-floor correction uses
    assert 2 * result.coils * result.noise_sigma**2 == pytest.approx(2 * 8 * ph.noise_sigma**2, rel=0.05)
    for value, name in ph.label_names.items():
        region = ph.labels == value
        assert result.fitted[region].mean() > 0.97, name
        median = np.median(result.r2star[region & result.fitted])
        assert median == pytest.approx(ph.region_r2star[name], rel=0.03), name
    # the automatic mask keeps tissue (including the dark iron-loaded liver) and drops air
    assert np.mean(result.status[ph.labels == 0] == Status.MASKED) > 0.99


def test_naive_loglinear_is_biased_where_noise_floor_matters():
    ph = make_phantom("transfusional", snr=30, coils=1, seed=4)
    default = fit(ph.image.signal, ph.image.echo_times_ms)
    naive = fit(ph.image.signal, ph.image.echo_times_ms, method="loglinear", mask=default.status > 0)
    liver = (ph.labels == 1) & default.fitted & naive.fitted
    assert np.median(default.r2star[liver]) == pytest.approx(650, rel=0.03)
    assert np.median(naive.r2star[liver]) < 0.8 * 650


def test_uncertainty_matches_monte_carlo_spread():
    rng = np.random.default_rng(5)
    for r2, coils in ((100.0, 1), (400.0, 8)):
        y = noncentral_chi(decay(np.full(4000, r2)), 20.0, coils, rng)
        result = fit(y, TE, mask=np.ones(4000, bool), noise_sigma=20.0, coils=coils)
        spread = np.nanstd(result.r2star)
        assert np.nanmedian(result.uncertainty) == pytest.approx(spread, rel=0.2)


def test_fast_ml_reaches_the_exact_likelihood_optimum():
    rng = np.random.default_rng(6)
    y = noncentral_chi(decay(np.full(12, 300.0)), 25.0, 4, rng)
    fast = fit(y, TE, method="ml", mask=np.ones(12, bool), noise_sigma=25.0, coils=4)
    exact = [fit_voxel_ml(y[:, i], TE, 25.0, 4)[1] for i in range(12)]
    np.testing.assert_allclose(fast.r2star, exact, rtol=1e-3)


def test_noise_estimated_from_background_and_reported():
    ph = make_phantom("normal", snr=40, coils=1, seed=7, shape=(8, 64, 64))
    result = fit(ph.image.signal, ph.image.echo_times_ms)
    assert result.noise_sigma == pytest.approx(ph.noise_sigma, rel=0.05)
    prov = result.provenance()
    assert prov["noise_source"] == "background" and prov["method"] == "noise-corrected-ml"
    assert "Feng" in prov["method_reference"] and "likelihood" in prov["method_reference"]


def test_results_do_not_depend_on_threads_or_shape():
    ph = make_phantom("transfusional", snr=30, coils=2, seed=8, shape=(6, 48, 64))
    sig = ph.image.signal
    one = fit(sig, ph.image.echo_times_ms, workers=1, noise_sigma=ph.noise_sigma, coils=2)
    two = fit(sig.astype(np.float64), ph.image.echo_times_ms, workers=2, noise_sigma=ph.noise_sigma, coils=2)
    np.testing.assert_array_equal(one.status, two.status)
    np.testing.assert_allclose(one.r2star, two.r2star, rtol=1e-6, equal_nan=True)
    flat = fit(sig.reshape(sig.shape[0], -1), ph.image.echo_times_ms, noise_sigma=ph.noise_sigma, coils=2)
    np.testing.assert_allclose(flat.r2star.reshape(one.r2star.shape), one.r2star, rtol=1e-6, equal_nan=True)


def test_progress_and_cancellation():
    ph = make_phantom("normal", snr=50, shape=(16, 96, 128), seed=9)
    seen = []
    fit(ph.image.signal, ph.image.echo_times_ms, progress=seen.append)
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(FitCancelled, match="cancelled"):
        fit(ph.image.signal, ph.image.echo_times_ms, cancel=cancel, workers=1)


def test_spin_echo_quantity_is_carried():
    result = fit(decay(np.array([30.0])), TE, quantity="T2", mask=np.ones(1, bool), noise_sigma=1e-3)
    assert result.quantity == "T2" and result.provenance()["quantity"] == "T2"


def test_every_method_is_listed():
    assert set(METHODS) >= {"loglinear", "nlls", "offset", "truncation", "noise-corrected", "ml",
                            "arlo", "auto", "fat-water"}


def test_truncation_reports_echoes_used():
    rng = np.random.default_rng(10)
    y = noncentral_chi(decay(np.array([50.0, 900.0])), 10.0, 1, rng)
    result = fit(y, TE, method="truncation", mask=np.ones(2, bool), noise_sigma=10.0)
    assert result.echoes_used[0] == 12
    assert 3 <= result.echoes_used[1] < 12


def test_default_polishes_short_t2star_voxels_with_maximum_likelihood():
    from IronMapping import estimators

    rng = np.random.default_rng(11)
    r2 = np.repeat([100.0, 1500.0], 500)
    y = noncentral_chi(decay(r2), 50.0, 1, rng)
    result = fit(y, TE, mask=np.ones(r2.size, bool), noise_sigma=50.0, coils=1, workers=2)
    direct = estimators.noise_corrected_ml(y, TE / 1000.0, sigma=50.0, coils=1.0)
    ml = estimators.maximum_likelihood(y, TE / 1000.0, sigma=50.0, coils=1.0)
    squared = estimators.noise_corrected(y, TE / 1000.0, sigma=50.0, coils=1.0)
    fitted = result.status == Status.FITTED
    np.testing.assert_allclose(result.r2star[fitted], direct.r2star[fitted], rtol=1e-6)
    fast = r2 > 1000
    # short T2*: the default follows maximum likelihood, not the squared-signal fit
    assert np.median(np.abs(result.r2star[fast & fitted] - ml.r2star[fast & fitted])) < 1e-3
    assert np.median(np.abs(squared.r2star[fast] - ml.r2star[fast])) > 1.0
    # long T2*: nothing to polish, the squared-signal fit stands
    np.testing.assert_allclose(result.r2star[~fast], squared.r2star[~fast], rtol=1e-6)  # float32 maps


def test_options_are_named_keywords_and_reach_their_kernel():
    import inspect

    params = inspect.signature(fit).parameters
    for name in ("workers", "snr_limit", "fat_evidence", "precession_clockwise"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    rng = np.random.default_rng(12)
    y = noncentral_chi(decay(np.array([300.0] * 20)), 10.0, 1, rng)
    mask = np.ones(y.shape[1], bool)
    default = fit(y, TE, method="truncation", mask=mask, noise_sigma=10.0)
    strict = fit(y, TE, method="truncation", mask=mask, noise_sigma=10.0, snr_limit=8.0)
    assert np.all(strict.echoes_used <= default.echoes_used)
    assert np.any(strict.echoes_used < default.echoes_used)
    assert fit(y, TE, method="truncation", mask=mask, noise_sigma=10.0, snr_limit=None).echoes_used.tolist() \
        == default.echoes_used.tolist()
    with pytest.raises(InputError, match="Unknown option.*'snr'.*Valid options.*snr_limit"):
        fit(y, TE, mask=mask, noise_sigma=10.0, snr=2.0)


def test_fat_water_options_reach_the_fat_water_kernel():
    from IronMapping.fatwater import fit_fatwater_chunk

    rng = np.random.default_rng(13)
    te = 1.2 * np.arange(1, 7)
    y = noncentral_chi(decay(np.array([80.0] * 200), te), 20.0, 1, rng)
    mask = np.ones(y.shape[1], bool)
    result = fit(y, te, method="fat-water", field_strength_t=1.5, mask=mask, noise_sigma=20.0,
                 coils=1, fat_evidence=0.0, precession_clockwise=False)
    direct = fit_fatwater_chunk(y.astype(np.float64), te / 1000.0, field_strength_t=1.5, sigma=20.0,
                                coils=1, fat_evidence=0.0, precession_clockwise=False)
    fitted = result.status == Status.FITTED
    assert fitted.mean() > 0.9
    np.testing.assert_allclose(result.maps["pdff"][fitted], direct["pdff"][fitted], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("te", [
    [1.0, 2.0, 2.0, 4.0],                     # duplicate
    [1.0, 2.0, 2.0 + 1e-9, 4.0],              # duplicate within the tolerance
    list(0.001 * np.arange(1, 13)),           # seconds with 1 ms spacing, not duplicates
    list(1000.0 * np.arange(1, 5)),           # microseconds
    [1.0, -2.0, 3.0, 4.0],
    [1.0, 3.0, 2.0, 4.0],
])
def test_fit_and_the_readers_share_one_echo_time_check(te):
    from IronMapping.io.checks import check_echo_times as check_common

    with pytest.raises(EchoTimeError) as common:
        check_common(te, len(te), require_increasing=True)
    with pytest.raises(EchoTimeError) as ours:
        check_echo_times(te, len(te))
    assert str(ours.value) == str(common.value)
    with pytest.raises(EchoTimeError) as fitted:
        fit(decay(np.array([100.0, 50.0]), np.arange(1, len(te) + 1)), te)
    assert str(fitted.value) == str(common.value)


def test_t2star_from_float64_r2star_matches_float32():
    from IronMapping.relaxometry import t2star_from_r2star

    r2 = np.array([0.0, 1e-9, 20.0, 400.0, np.nan, -3.0, 50.0])
    status = np.array([1, 1, 1, 1, 1, 1, 0], np.uint8)
    for values in (r2, r2.astype(np.float32)):
        t2 = t2star_from_r2star(values, status, TE)
        assert t2.dtype == np.float32
        np.testing.assert_allclose(t2, [np.nan, np.nan, 50.0, 2.5, np.nan, np.nan, np.nan], equal_nan=True)


def test_selection_gives_the_indices_of_the_selected_voxels_block_by_block():
    from IronMapping.relaxometry import _Selection

    rng = np.random.default_rng(14)
    for n, share in [(0, 0.5), (5, 1.0), (50_000, 0.0), (50_000, 0.3), (70_001, 1.0)]:
        selected = rng.random(n) < share
        selected[20_000:40_000] = False  # whole chunks with nothing selected
        selection = _Selection(selected)
        expected = np.flatnonzero(selected)
        assert selection.size == expected.size
        for size in (1, 7, 8192, 10_000):
            parts = [selection[slice(i, i + size)] for i in range(0, selection.size, size)]
            got = np.concatenate(parts) if parts else np.empty(0, int)
            np.testing.assert_array_equal(got, expected)
