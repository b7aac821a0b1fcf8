"""Focal areas of one organ: robust background, hysteresis detection, the cluster tests.

Steps 1-5 of the focal analysis described in :mod:`IronMapping.focal` (edge erosion,
background and texture, smoothed z with hysteresis, 50 % partial-volume extent and cluster
tests, background re-estimated without the areas), for one organ at a time
(`analyse_organ`). R2* and its uncertainty in 1/s; everything is vectorised.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .focal_settings import DENSE, SPARING, focal_options


# Heterogeneity beyond the per-voxel uncertainty (tau / background) on homogeneous organs of
# the IronMapping phantom, all presets (R2* 21-650 1/s), 1 and 8 coils, SNR 20-100
# (Testing/benchmarks/benchmark_focal.py): median 0, maximum 0.073 at SNR 20, 0.031 at SNR 50,
# 0.015 at SNR 100 (the fit's SD slightly understates the spread of its estimates); small
# organs (a few hundred voxels) scatter more (0.086 seen in a pancreas at SNR 20), hence 0.10.
# An organ above it has texture (vessels, fibrosis, patchy iron) that the fit uncertainty
# does not explain.
PHANTOM_EXCESS_CV_RANGE = (0.0, 0.10)

_MAD_TO_SD = 1.4826
_MEDIAN_SE = float(np.sqrt(np.pi / 2))       # SE of a median / SE of a mean, normal sample
_STATUS_FITTED, _STATUS_MASKED, _STATUS_OUT_OF_RANGE = 1, 0, 4
_CONNECTIVITY = ndimage.generate_binary_structure(3, 3)   # 26-connected: any touching voxel


def bounding_box(mask: np.ndarray, margin: int = 0):
    """Slices of the smallest box holding a mask plus a margin (clipped to the array).

    Parameters
    ----------
    mask : bool ndarray, shape (k, j, i)
    margin : int
        Voxels added on each side.

    Returns
    -------
    tuple of slice or None
        One slice per axis; None for an empty mask.
    """
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size == 0:
            return None
        box.append(slice(max(0, int(hit[0]) - margin), min(mask.shape[axis], int(hit[-1]) + margin + 1)))
    return tuple(box)


def _erode_in_plane(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Erosion by the in-plane 4-neighbour cross (outside the array counts as outside)."""
    out = mask.copy()
    for _ in range(iterations):
        m = out.copy()
        m[:, 1:, :] &= out[:, :-1, :]
        m[:, :-1, :] &= out[:, 1:, :]
        m[:, :, 1:] &= out[:, :, :-1]
        m[:, :, :-1] &= out[:, :, 1:]
        m[:, [0, -1], :] = False
        m[:, :, [0, -1]] = False
        out = m
    return out


def _grow_box(box, shape, margin=1):
    return tuple(slice(max(0, b.start - margin), min(n, b.stop + margin)) for b, n in zip(box, shape))


def _robust(values: np.ndarray):
    med = float(np.median(values))
    return med, _MAD_TO_SD * float(np.median(np.abs(values - med)))


def _background(r2, u2, core):
    """(median, robust SD, tau, median u, n) of the background voxels."""
    values = r2[core]
    med, sd = _robust(values)
    u2_med = float(np.median(u2[core]))
    tau = float(np.sqrt(max(0.0, sd * sd - u2_med)))
    return med, sd, tau, float(np.sqrt(u2_med)), int(values.size)


def _box_mean(values, weights, size):
    """Normalised convolution: mean of ``values`` over the voxels with weight 1 in a box."""
    n = ndimage.uniform_filter(weights, size, mode="constant")
    total = ndimage.uniform_filter(values * weights, size, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 1e-9, total / n, 0.0), n * float(np.prod(size))


def _detect(r2, u2, core, dark, bg, tau, se_bg, options, min_size):
    """Areas found against one background: list of (kind, mask, core level).

    The local variance a background voxel would have is the box mean of u^2 (5 x 5 in-plane)
    plus tau^2: taken from the neighbourhood rather than from each voxel, because the fit
    uncertainty grows with R2* and a voxel's own u would favour its own noise.
    """
    w = core.astype(np.float64)
    var_local, _ = _box_mean(u2, w, (1, 5, 5))
    var_local = np.where(core, var_local, 1.0) + tau * tau
    mean, n_box = _box_mean(r2, w, (1, 3, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (mean - bg) / np.sqrt(var_local / np.maximum(n_box, 1.0) + se_bg * se_bg)
        z_voxel = (r2 - bg) / np.sqrt(var_local)
    z = np.where(core & (n_box > 0.5), z, 0.0)
    z_voxel = np.where(core, z_voxel, 0.0)
    found = []
    for kind, sign in ((SPARING, -1.0), (DENSE, 1.0)):
        zs = sign * z
        grow = core & (zs >= options.grow_z)
        seeds = core & (zs >= options.seed_z)
        if kind == DENSE:
            grow |= dark
            seeds |= dark & (ndimage.uniform_filter(dark.astype(np.float32), 3) > 0.1)
        if not seeds.any():
            continue
        comp, _ = ndimage.label(grow, _CONNECTIVITY)
        objects = ndimage.find_objects(comp)
        sizes = np.bincount(comp.ravel())
        seeded = np.unique(comp[seeds])
        for c in seeded[(seeded > 0)]:
            if sizes[c] < min_size:
                continue
            sl = objects[c - 1]
            area = comp[sl] == c
            area_seeds = area & seeds[sl]
            r2s, zv, dk = r2[sl], z_voxel[sl], dark[sl]
            core_voxels = area_seeds & ~dk & (sign * zv >= options.grow_z)
            n_dark = int(np.count_nonzero(area_seeds & dk))
            if n_dark > np.count_nonzero(core_voxels):
                level = np.inf
            elif core_voxels.any():
                level = float(np.median(r2s[core_voxels]))
            else:
                continue
            # 50 % partial-volume rule on each voxel's own R2*
            if np.isfinite(level):
                half = bg + 0.5 * (level - bg)
                member = area & ~dk & (sign * (r2s - half) >= 0)
            else:
                member = area & ~dk & (sign * zv >= options.grow_z)
            if kind == DENSE:
                member |= area & dk
            parts, m = ndimage.label(member, _CONNECTIVITY)
            if m == 0:
                continue
            part_sizes = np.bincount(parts.ravel(), minlength=m + 1)
            with_seed = np.unique(parts[area_seeds & member])
            for p in with_seed[with_seed > 0]:
                if part_sizes[p] >= min_size:
                    found.append((kind, sl, parts == p, level))
    return found


def _finding_statistics(kind, sl, mask, r2, u2, dark, bg, tau, se_bg, u_bg, options):
    """Numbers of one area (``mask`` within the box ``sl``), or None when it does not pass
    the cluster tests."""
    r2, u2, dark = r2[sl], u2[sl], dark[sl]
    n = int(np.count_nonzero(mask))
    n_dark = int(np.count_nonzero(mask & dark))
    finite = mask & ~dark
    values = r2[finite]
    if values.size == 0 and n_dark == 0:
        return None
    # Dark voxels decay faster than the echoes sample: ranked above every measured value.
    ranked = np.concatenate([np.sort(values), np.full(n_dark, np.inf)])
    median = float(np.median(ranked)) if ranked.size else None
    if median is not None and not np.isfinite(median):
        median = None
    var = u2[finite] + tau * tau
    u_f = float(np.sqrt(np.median(u2[finite]))) if values.size else None
    if median is None:  # more than half dark: certainly denser than a measurable background
        diff = None
        z = np.inf
        exceeds = True
        se = None
        lower = float(np.max(values)) if values.size else None
    else:
        diff = median - bg
        se_f = _MEDIAN_SE * float(np.sqrt(np.mean(var) / max(values.size, 1)))
        se = float(np.hypot(se_f, se_bg))
        z = abs(diff) / se if se > 0 else np.inf
        combined = float(np.hypot(u_f, np.hypot(u_bg, tau)))
        exceeds = abs(diff) > options.coverage_factor * combined
        lower = None
        if (kind == SPARING) != (diff < 0):
            return None
    if z < options.cluster_z or not exceeds:
        return None
    return {"n_voxels": n, "n_dark_voxels": n_dark, "r2star_median": median,
            "r2star_lower_bound": lower, "r2star_uncertainty_median": u_f,
            "difference_r2star": diff, "standard_error_difference_r2star": se,
            "z_difference": None if not np.isfinite(z) else float(z),
            "combined_uncertainty_r2star": (None if u_f is None
                                            else float(np.hypot(u_f, np.hypot(u_bg, tau))))}


def analyse_organ(r2, uncertainty, status, domain, voxel_volume_ml=None, options=None):
    """Focal areas of one organ.

    Parameters
    ----------
    r2, uncertainty : ndarray, shape (k, j, i)
        R2* and its SD in 1/s; NaN where not fitted.
    status : uint8 ndarray, shape (k, j, i)
        Fit status codes (1 fitted, 0 no signal, 4 out of range).
    domain : bool ndarray, shape (k, j, i)
        The organ (with any lesion drawn inside it).
    voxel_volume_ml : float, optional
        mL per voxel (None: sizes in voxels only).
    options : FocalOptions or dict, optional

    Returns
    -------
    areas : list of dict
        Kind, mask (bool, shape (k, j, i)), statistics.
    organ : dict
        background_r2star_median, robust SD, tau, heterogeneity indices and notes.
    """
    options = focal_options(options)
    domain = np.asarray(domain, bool)
    organ = {"n_voxels": int(domain.sum()), "n_core_voxels": 0, "background_r2star_median": None,
             "background_r2star_robust_sd": None, "background_uncertainty_median": None,
             "texture_sd_r2star": None, "heterogeneity_robust_cv": None,
             "heterogeneity_excess_cv": None, "heterogeneity_noise_cv": None,
             "heterogeneity_within_phantom_range": None, "min_size_voxels":
             options.min_size_voxels(voxel_volume_ml), "notes": []}
    if not domain.any():
        organ["notes"].append("empty region: no focal analysis")
        return [], organ
    # Work in the organ's bounding box (plus a margin for the filters).
    box = bounding_box(domain, 2)
    dom = domain[box]
    r2b = np.asarray(r2)[box].astype(np.float64)
    ub = np.asarray(uncertainty)[box].astype(np.float64)
    st = np.asarray(status)[box]
    fitted = (st == _STATUS_FITTED) & np.isfinite(r2b) & np.isfinite(ub)
    core = _erode_in_plane(dom, options.erode_voxels) if options.erode_voxels else dom.copy()
    if core.sum() < max(3 * organ["min_size_voxels"], 30):
        core = dom.copy()
        organ["notes"].append("organ too thin to erode its edge: edge voxels kept (partial volume "
                              "at the edge may cause findings there)")
    dark = core & ((st == _STATUS_OUT_OF_RANGE) | (st == _STATUS_MASKED)) & ~np.isfinite(r2b)
    dark_fraction = float(dark.sum()) / max(int(core.sum()), 1)
    organ["dark_fraction"] = dark_fraction
    if dark_fraction > options.max_dark_fraction:
        # Scattered through the organ, unfittable voxels are noise, not a focus: with this
        # many, chance clusters of them reach any minimum size.
        organ["notes"].append(
            f"{100 * dark_fraction:.1f} % of the organ's voxels decay faster than the echoes sample "
            "or give no signal: such voxels are not used as evidence of dense foci (a shorter "
            "first echo or higher SNR would measure them)")
        dark = np.zeros_like(dark)
    core &= fitted
    organ["n_core_voxels"] = int(core.sum())
    if organ["n_core_voxels"] < 2 * organ["min_size_voxels"]:
        organ["notes"].append("too few fitted voxels inside the organ for a focal analysis")
        return [], organ
    r2b = np.where(fitted, r2b, np.nan)
    u2 = np.where(fitted, ub * ub, np.nan)
    min_size = organ["min_size_voxels"]
    background = core
    areas = []
    previous = None
    for _ in range(2):  # second pass: background without the areas found
        bg, sd, tau, u_bg, n_bg = _background(r2b, u2, background)
        if previous is not None and abs(bg - previous[0]) < 0.05 * sd and abs(tau - previous[1]) < 0.05 * sd:
            break  # the areas hardly moved the background: the first pass stands
        previous = (bg, tau)
        se_bg = _MEDIAN_SE * sd / np.sqrt(n_bg)
        found = _detect(np.nan_to_num(r2b), np.nan_to_num(u2, nan=1.0), core, dark, bg, tau,
                        se_bg, options, min_size)
        areas = []
        for kind, sl, mask, level in found:
            stats = _finding_statistics(kind, sl, mask, r2b, u2, dark, bg, tau, se_bg, u_bg, options)
            if stats is not None:
                areas.append({"kind": kind, "box": sl, "mask": mask, **stats})
        if not areas:
            break
        taken = np.zeros(core.shape, bool)
        for a in areas:
            grown = _grow_box(a["box"], core.shape)
            local = np.zeros(tuple(g.stop - g.start for g in grown), bool)
            local[tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(a["box"], grown))] = a["mask"]
            taken[grown] |= ndimage.binary_dilation(local, _CONNECTIVITY)
        new_background = core & ~taken
        if new_background.sum() < max(30, min_size):
            break
        background = new_background
    bg, sd, tau, u_bg, n_bg = _background(r2b, u2, background)
    organ.update(background_r2star_median=bg, background_r2star_robust_sd=sd,
                 background_uncertainty_median=u_bg, texture_sd_r2star=tau,
                 background_n_voxels=n_bg)
    if bg > 0:
        organ["heterogeneity_robust_cv"] = sd / bg
        organ["heterogeneity_excess_cv"] = tau / bg
        organ["heterogeneity_noise_cv"] = u_bg / bg
        organ["heterogeneity_within_phantom_range"] = bool(tau / bg <= PHANTOM_EXCESS_CV_RANGE[1])
    full = []
    for area in areas:
        mask = np.zeros(domain.shape, bool)
        inner = area.pop("box")
        mask[tuple(slice(b.start + i.start, b.start + i.stop) for b, i in zip(box, inner))] = area["mask"]
        area["mask"] = mask
        area["background_r2star_median"] = bg
        if area["r2star_median"] is not None:  # against the final background
            area["difference_r2star"] = area["r2star_median"] - bg
        area["background_uncertainty_median"] = u_bg
        full.append(area)
    return full, organ

