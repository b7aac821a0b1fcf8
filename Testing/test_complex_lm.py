"""The complex fat-water Levenberg-Marquardt (IronMapping/fatwater/complex_lm.py).

Its normal equations come from echo sums (the phase cancels in J^T J): they must equal those
of the explicit Jacobian. Its convergence rule stops at a step that changes the model by
1e-4 of the signal: the answer must be that of a much tighter fit, and a voxel already at
its optimum must cost no trial evaluation.
"""

import numpy as np
import pytest

import IronMapping.fatwater.complex_lm as complex_lm
from IronMapping.fatmodel import fat_phasor
from IronMapping.fatwater import fit_fatwater_complex_chunk
from IronMapping.fatwater.complex_lm import ComplexNormalEquations, lm_complex

ECHOES = {"uniform": 1.2 + 2.0 * np.arange(6), "non-uniform": np.array([1.0, 2.3, 4.1, 5.0, 7.7])}


def explicit_terms(z, te_ms, c, p, even):
    """Cost, J^T J and J^T res from the complex model's Jacobian columns, spelled out."""
    t = te_ms[:, None]
    w, f, r, psi, phi = p[:5]
    angle = 2 * np.pi * t * psi + phi + (0.0 if even is None else even * p[5])
    b = np.exp(-t * r + 1j * angle)
    model = (w + c * f) * b
    res = z - model
    columns = [b, c * b, -t * model, 2j * np.pi * t * model, 1j * model]
    if even is not None:
        columns.append(1j * even * model)
    j = np.stack(columns)
    h = (np.einsum("aen,ben->abn", j.real, j.real)
         + np.einsum("aen,ben->abn", j.imag, j.imag))
    g = np.einsum("aen,en->an", j.real, res.real) + np.einsum("aen,en->an", j.imag, res.imag)
    return 0.5 * (np.abs(res) ** 2).sum(0), h, g


@pytest.mark.parametrize("echoes", sorted(ECHOES))
@pytest.mark.parametrize("bipolar", [False, True])
def test_normal_equations_from_echo_sums_equal_the_jacobian_ones(echoes, bipolar):
    te = ECHOES[echoes]
    rng = np.random.default_rng(3)
    c = fat_phasor(te, 1.5)[:, None]
    even = (np.arange(te.size) % 2 == 1).astype(float)[:, None] if bipolar else None
    n = 9
    rows = [rng.uniform(0, 1, n), rng.uniform(0, 1, n), rng.uniform(0, 0.3, n),
            rng.uniform(-0.2, 0.2, n), rng.uniform(-3, 3, n)]
    p = np.stack(rows + ([rng.uniform(-2, 2, n)] if bipolar else []))
    z = rng.standard_normal((te.size, n)) + 1j * rng.standard_normal((te.size, n))
    cost, h, g = ComplexNormalEquations(te[:, None], c, even).terms(z, p)
    cost_x, h_x, g_x = explicit_terms(z, te, c, p, even)
    np.testing.assert_allclose(cost, cost_x, rtol=1e-12)
    np.testing.assert_allclose(h, h_x, rtol=1e-10, atol=1e-12 * np.abs(h_x).max())
    np.testing.assert_allclose(g, g_x, rtol=1e-10, atol=1e-12 * np.abs(g_x).max())


def noisy_chunk(n=600, snr=40.0, seed=5):
    te = 1.0 * np.arange(1, 9)
    rng = np.random.default_rng(seed)
    ff = rng.uniform(0, 0.6, n)
    r2 = np.exp(rng.uniform(np.log(20), np.log(400), n))
    field = rng.uniform(-150, 150, n)
    phase = rng.uniform(-np.pi, np.pi, n)
    c = fat_phasor(te, 1.5)[:, None]
    t = te[:, None] / 1000.0
    z = 1000.0 * ((1 - ff) + ff * c) * np.exp(-r2 * t + 1j * (2 * np.pi * field * t + phase))
    z += (1000.0 / snr) * (rng.standard_normal(z.shape) + 1j * rng.standard_normal(z.shape))
    return z, te, field


def test_the_answer_is_that_of_a_much_tighter_fit(monkeypatch):
    z, te, field = noisy_chunk()
    fit = fit_fatwater_complex_chunk(z, te / 1000.0, field_strength_t=1.5, fieldmap_hz=field)
    monkeypatch.setattr(complex_lm, "_COMPLEX_XTOL", 1e-10)
    tight = fit_fatwater_complex_chunk(z, te / 1000.0, field_strength_t=1.5, fieldmap_hz=field)
    assert fit["converged"].mean() > 0.99
    # SNR 40, 8 echoes: PDFF SD ~1 point, R2* SD ~5 1/s; the default stops within 1 % of it.
    assert np.max(np.abs(fit["pdff"] - tight["pdff"])) < 0.02
    assert np.max(np.abs(fit["r2star"] - tight["r2star"])) < 0.05
    period = 1000.0
    error = (fit["fieldmap_hz"] - tight["fieldmap_hz"] + period / 2) % period - period / 2
    assert np.max(np.abs(error)) < 0.01
    assert np.all(fit["rss"] <= tight["rss"] * (1 + 1e-5))


def test_a_voxel_at_its_optimum_costs_no_trial_evaluation(monkeypatch):
    z, te, field = noisy_chunk(n=200)
    t = te[:, None]
    c = fat_phasor(te, 1.5)[:, None]
    scale = np.abs(z).max(0)
    zn = z / scale
    start = np.stack([np.full(200, 0.8), np.full(200, 0.2), np.full(200, 0.05), field * 1e-3,
                      np.angle(zn[0])])
    optimum, _, converged = lm_complex(zn, t, c, start, 200)
    assert converged.all()
    evaluated = []
    terms = ComplexNormalEquations.terms

    def counting(self, z_, p_):
        evaluated.append(p_.shape[1])
        return terms(self, z_, p_)

    monkeypatch.setattr(ComplexNormalEquations, "terms", counting)
    again, _, converged = lm_complex(zn, t, c, optimum, 200)
    assert converged.all()
    # The start's own terms only: the next step is within the tolerance, so no trial point.
    assert evaluated == [200]
    np.testing.assert_array_equal(again, optimum)


def test_ldl_solve_matches_lapack_and_refuses_what_is_not_positive_definite():
    rng = np.random.default_rng(11)
    n, size = 50, 6
    jac = rng.standard_normal((n, 12, size))
    a = np.einsum("nea,neb->nab", jac, jac)
    g = rng.standard_normal((n, size))
    a[3] = -np.eye(size)          # negative definite
    a[7, 2, :] = a[7, :, 2] = 0.0  # singular: a parameter the data do not determine
    a[9, 0, 0] = np.nan
    x, ok = complex_lm.ldl_solve(np.moveaxis(a, 0, -1), g.T)
    good = np.setdiff1d(np.arange(n), [3, 7, 9])
    np.testing.assert_array_equal(np.flatnonzero(~ok), [3, 7, 9])
    np.testing.assert_allclose(x[:, good].T, np.linalg.solve(a[good], g[good][:, :, None])[:, :, 0],
                               rtol=1e-9, atol=1e-12)
    assert np.all(x[:, ~ok] == 0.0)


def test_a_direction_the_data_do_not_determine_gets_no_step():
    rng = np.random.default_rng(12)
    jac = rng.standard_normal((4, 10, 5))
    jac[:, :, 3] = 0.0  # e.g. the field map of a voxel with no signal
    h = np.moveaxis(np.einsum("nea,neb->nab", jac, jac), 0, -1)
    g = np.einsum("nea,ne->an", jac, rng.standard_normal((4, 10)))
    d, ok = complex_lm.solve_damped(h, g, np.full(4, 1e-3))
    assert ok.all()
    np.testing.assert_array_equal(d[3], 0.0)
    assert np.all(np.abs(d[[0, 1, 2, 4]]) > 0)
