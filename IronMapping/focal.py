"""Iron within an organ: focal areas whose R2* departs from the organ's own background.

    >>> from IronMapping.focal import find_focal_findings
    >>> out = find_focal_findings(fit_result, labels, {1: "liver", 2: "spleen"},
    ...                           voxel_volume_ml=0.054, ijk_to_ras=image.ijk_to_ras)
    >>> out["findings"][0]["kind"], out["findings"][0]["volume_ml"], out["findings"][0]["reading"]

Within each organ region (liver, spleen, kidney, pancreas; a lesion region drawn inside an
organ counts as part of it), connected areas are found whose R2* is lower (iron-sparing:
a lesion that excludes iron, or focal sparing) or higher (iron-dense: focal siderosis, a
siderotic nodule, calcification or haemorrhage) than the organ's robust background by more
than the per-voxel uncertainty explains. Steps, all vectorised:

1. The organ edge is eroded by one voxel in-plane (partial volume with neighbours).
2. Background: median R2* of the eroded organ; its spread beyond the fit uncertainty,
   tau^2 = max(0, (1.4826 MAD)^2 - median(u^2)), is the organ's texture. Every voxel gets
   the variance u^2 + tau^2 (u = the fit's `uncertainty` map, SD of R2* in 1/s).
3. An inverse-variance-weighted 3 x 3 in-plane mean and its z against the background.
   Hysteresis: seeds |z| >= seed_z, grown through connected voxels with |z| >= grow_z of the
   same sign. Voxels whose decay is too fast to fit (status out of range) or with no signal
   inside the organ are dark and join iron-dense areas.
4. Extent: a voxel belongs to the focus when its own R2* is at least half-way from the
   background to the focus core (the 50 % partial-volume rule), kept when the area reaches
   the minimum size and its median differs from the background by more than
   ``coverage_factor`` x the combined per-voxel uncertainty and ``cluster_z`` standard errors.
5. The background is re-estimated without the found areas and steps 2-4 repeated once.

Readings follow Belay et al. 2018 (J Med Case Rep, doi:10.1186/s13256-017-1531-9: lesions
that exclude iron, such as adenoma, HCC and metastasis, stand out against an iron-loaded
liver; extramedullary haematopoiesis holds iron like the liver) and Idilman et al. 2016
(Diagn Interv Radiol 22:22: focal siderosis and diffuse siderosis with focal sparing). The
sign of the local field shift around dark areas, with phase data, is in
:mod:`IronMapping.focal_phase`. Research use only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .errors import InputError

FOCAL_ORGANS = ("liver", "spleen", "kidney", "pancreas")
SPARING = "iron-sparing"
DENSE = "iron-dense"
KINDS = (SPARING, DENSE)

BELAY_2018 = ("Belay et al., J Med Case Rep 2018;12:39, doi:10.1186/s13256-017-1531-9")
IDILMAN_2016 = "Idilman et al., Diagn Interv Radiol 2016;22:22"

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


@dataclass
class FocalOptions:
    """Settings of the focal analysis (all user-settable).

    Attributes
    ----------
    min_volume_ml : float
        Smallest area reported in mL, default 0.75: a focus of 1 mL measured up to 25 % small
        is still reported; raise it (e.g. 3) for fewer, larger findings.
    min_voxels : int
        Smallest area in voxels, whatever the voxel size (and when it is unknown); the minimum
        in small organs with coarse voxels.
    seed_z, grow_z : float
        Hysteresis thresholds on the smoothed z (standard deviations).
    cluster_z : float
        The area's median must differ from the background by this many standard errors.
    coverage_factor : float
        And by more than this x the combined per-voxel uncertainty (the rule of the lesion
        comparison, IronMapping.regions.compare_lesion).
    erode_voxels : int
        In-plane erosion of the organ edge (partial volume).
    max_dark_fraction : float
        Voxels too dark or too fast-decaying to fit join dense foci only while they are at most
        this share of the organ (scattered, they are noise).
    organs : tuple of str
        Organs analysed.
    """

    min_volume_ml: float = 0.75
    min_voxels: int = 10
    seed_z: float = 4.0
    grow_z: float = 2.0
    cluster_z: float = 5.0
    coverage_factor: float = 2.0
    erode_voxels: int = 1
    max_dark_fraction: float = 0.02
    organs: tuple = FOCAL_ORGANS

    def __post_init__(self):
        if not (self.min_volume_ml >= 0 and self.min_voxels >= 1):
            raise InputError("The minimum focal-finding size must be >= 0 mL and >= 1 voxel; got "
                             f"{self.min_volume_ml} mL, {self.min_voxels} voxels.")
        if not (self.seed_z >= self.grow_z > 0):
            raise InputError(f"Hysteresis thresholds need seed_z >= grow_z > 0; got {self.seed_z}, "
                             f"{self.grow_z}.")
        self.organs = tuple(self.organs)

    def min_size_voxels(self, voxel_volume_ml: float | None) -> int:
        """Smallest area in voxels at a voxel size.

        Parameters
        ----------
        voxel_volume_ml : float or None
            mL per voxel; None gives ``min_voxels``.

        Returns
        -------
        int
            The larger of ``min_voxels`` and ``min_volume_ml`` in voxels.
        """
        if voxel_volume_ml:
            return max(int(self.min_voxels), int(np.ceil(self.min_volume_ml / voxel_volume_ml - 1e-9)))
        return int(self.min_voxels)


def focal_options(options) -> FocalOptions:
    """A FocalOptions from None, a FocalOptions or a dict of its fields.

    Parameters
    ----------
    options : None, FocalOptions or dict

    Returns
    -------
    FocalOptions

    Raises
    ------
    InputError
        For unknown fields, another type, or invalid values.
    """
    if options is None:
        return FocalOptions()
    if isinstance(options, FocalOptions):
        return options
    if isinstance(options, dict):
        unknown = set(options) - set(FocalOptions.__dataclass_fields__)
        if unknown:
            raise InputError(f"Unknown focal-finding option(s) {sorted(unknown)}; use "
                             f"{sorted(FocalOptions.__dataclass_fields__)}.")
        return FocalOptions(**options)
    raise InputError("focal options must be None, a dict or an IronMapping.focal.FocalOptions.")


# --------------------------------------------------------------------------- masks as runs

def mask_runs(mask: np.ndarray) -> list:
    """Run-length code of a boolean mask.

    Parameters
    ----------
    mask : bool ndarray, any shape

    Returns
    -------
    list of [int, int]
        [start, length] of C-order flat indices.
    """
    flat = np.flatnonzero(np.ravel(mask))
    if flat.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(flat) != 1)
    starts = np.concatenate([[flat[0]], flat[breaks + 1]])
    ends = np.concatenate([flat[breaks], [flat[-1]]])
    return [[int(s), int(e - s + 1)] for s, e in zip(starts, ends)]


def mask_from_runs(runs, shape) -> np.ndarray:
    """Boolean mask from :func:`mask_runs` output.

    Parameters
    ----------
    runs : list of [int, int] or None
    shape : tuple of int
        (k, j, i).

    Returns
    -------
    bool ndarray, shape ``shape``
    """
    flat = np.zeros(int(np.prod(shape)), bool)
    for start, length in runs or ():
        flat[int(start):int(start) + int(length)] = True
    return flat.reshape(tuple(shape))


def findings_label_map(findings, shape) -> np.ndarray:
    """Label map of findings: finding n (its "label_value", else 1-based) where it lies.

    Parameters
    ----------
    findings : list of dict
        With "mask_runs".
    shape : tuple of int
        (k, j, i).

    Returns
    -------
    uint16 ndarray, shape (k, j, i)
        0 outside every finding.
    """
    out = np.zeros(tuple(shape), np.uint16)
    for n, finding in enumerate(findings, start=1):
        out[mask_from_runs(finding.get("mask_runs"), shape)] = int(finding.get("label_value", n))
    return out


# --------------------------------------------------------------------------- one organ

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


# --------------------------------------------------------------------------- words

def _organ_word(organ: str) -> str:
    return organ or "organ"


def reading(finding: dict, organ: str) -> str:
    """The finding in words, for the radiologist (R2* 0.1 1/s, volume 0.1 mL).

    Parameters
    ----------
    finding : dict
        One finding of `find_focal_findings`.
    organ : str
        Its organ.

    Returns
    -------
    str
    """
    vol = finding.get("volume_ml")
    size = f"{vol:.1f} mL" if vol is not None else f"{finding['n_voxels']} voxels"
    bg = finding["background_r2star_median"]
    med = finding.get("r2star_median")
    value = (f"R2* {med:.1f} 1/s" if med is not None else
             "R2* above what the echoes can measure (more than half the voxels decay faster "
             "than the first echoes sample or give no signal)")
    head = f"focal area {size} with {value} in a {_organ_word(organ)} of {bg:.1f} 1/s"
    if finding["kind"] == SPARING:
        if organ == "liver":
            meaning = ("excludes iron, as adenoma, HCC or metastasis do; extramedullary "
                       "haematopoiesis would hold iron like the liver (Belay 2018); in diffuse "
                       "siderosis also focal sparing (Idilman 2016)")
        else:
            meaning = f"holds less iron than the surrounding {organ} (focal sparing or a lesion that excludes iron)"
    else:
        if organ == "liver":
            meaning = ("holds more iron than the liver, as focal siderosis or a siderotic "
                       "(regenerative) nodule does (Idilman 2016); calcification and haemorrhage "
                       "also darken gradient-echo images")
        elif organ == "spleen":
            meaning = ("holds more iron than the spleen, as a siderotic (Gamna-Gandy) body does; "
                       "calcification and haemorrhage also darken gradient-echo images")
        else:
            meaning = (f"denser than the surrounding {organ} (iron, calcification or haemorrhage "
                       "darken gradient-echo images)")
        phase = finding.get("field_shift") or {}
        sign = phase.get("sign")
        if sign == "paramagnetic":
            meaning += "; the local field shift is paramagnetic, as iron (not calcium)"
        elif sign == "diamagnetic":
            meaning += "; the local field shift is diamagnetic, as calcium (not iron)"
        elif phase:
            meaning += f"; field-shift sign not determined ({phase.get('reason')})"
    return f"{head}: {meaning}."


def confidence(finding: dict, coverage_factor: float) -> str:
    """The difference to the background with its uncertainty, in words.

    Parameters
    ----------
    finding : dict
        One finding of `find_focal_findings`.
    coverage_factor : float
        As in `FocalOptions`.

    Returns
    -------
    str
    """
    diff = finding.get("difference_r2star")
    if diff is None:
        return ("most voxels decay faster than the protocol can measure: denser than the "
                "background beyond doubt, value not measurable")
    se = finding["standard_error_difference_r2star"]
    lo, hi = diff - 1.96 * se, diff + 1.96 * se
    comb = finding.get("combined_uncertainty_r2star") or 0.0
    return (f"difference {diff:+.1f} 1/s (95 % CI {lo:+.1f} to {hi:+.1f} 1/s), ratio "
            f"{finding['ratio_r2star']:.2f}; beyond {coverage_factor:g} x the combined per-voxel "
            f"uncertainty ({coverage_factor * comb:.1f} 1/s)")


# --------------------------------------------------------------------------- all organs

def organ_domains(regions, shape):
    """Analysis domains: each organ region plus the lesion regions that touch it.

    Parameters
    ----------
    regions : list of (int, str, str or None, bool ndarray of shape (k, j, i))
        (label value, name, organ, mask).
    shape : tuple of int
        (k, j, i).

    Returns
    -------
    list of (int, str, str, bool ndarray, list of str)
        (value, name, organ, domain, [lesion names]) for organs of any kind (the caller picks
        which to analyse).
    """
    organs = [r for r in regions if r[2] not in (None, "lesion")]
    lesions = [r for r in regions if r[2] == "lesion"]
    attached = {r[0]: [] for r in organs}
    domains = {r[0]: r[3] for r in organs}
    for value, name, _, mask in lesions:
        if not mask.any():
            continue
        box = bounding_box(mask, 1)
        grown = ndimage.binary_dilation(mask[box], _CONNECTIVITY)
        touch = [(int(np.count_nonzero(grown & o[3][box])), o[0]) for o in organs]
        touch = [t for t in touch if t[0] > 0]
        if touch:
            host = max(touch)[1]
            domains[host] = domains[host] | mask
            attached[host].append(name)
    return [(v, n, o, domains[v], attached[v]) for v, n, o, _ in organs]


def _centroid(mask, ijk_to_ras):
    box = bounding_box(mask)
    k, j, i = np.nonzero(mask[box])
    k, j, i = k + box[0].start, j + box[1].start, i + box[2].start
    centre_kji = np.array([k.mean(), j.mean(), i.mean()])
    ras = None
    if ijk_to_ras is not None:
        m = np.asarray(ijk_to_ras, float)
        ras = (m[:3, :3] @ centre_kji[::-1] + m[:3, 3]).tolist()
    return centre_kji, ras, (int(k.min()), int(k.max()))


def find_focal_findings(fit_result, regions, voxel_volume_ml=None, ijk_to_ras=None,
                        options=None, complex_signal=None, echo_times_ms=None,
                        field_strength_t=None, precession_clockwise: bool = True,
                        signal=None) -> dict:
    """Focal findings of every analysed organ.

    Parameters
    ----------
    fit_result : RelaxometryFit
        r2star, uncertainty, status on the grid (k, j, i).
    regions : list of (int, str, str or None, bool ndarray of shape (k, j, i))
        (label value, name, organ, mask).
    voxel_volume_ml : float, optional
        mL per voxel.
    ijk_to_ras : ndarray, shape (4, 4), optional
        Voxel index to RAS mm (centroids in RAS mm when given).
    options : FocalOptions or dict, optional
    complex_signal : complex ndarray, shape (n_echoes, k, j, i), or dict, optional
        Or the loader's ``complex_components`` dict, for the field-shift sign of iron-dense
        areas (see IronMapping.focal_phase).
    echo_times_ms : ndarray, shape (n_echoes,), optional
        Echo times in ms, for the phase analysis.
    field_strength_t : float, optional
        Field strength in T, for the phase analysis.
    precession_clockwise : bool
        ISMRM PrecessionIsClockwise of the phase data.
    signal : ndarray, shape (n_echoes, k, j, i), optional
        Magnitudes, needed only with phase images in ``complex_signal``.

    Returns
    -------
    dict
        "findings" (list of JSON-able dicts, the contract of summary["focal_findings"]),
        "organs" (per organ: background and heterogeneity), "settings", "grid_shape",
        "phase", "notes", "references", "heterogeneity_phantom_range".
    """
    from . import focal_phase

    options = focal_options(options)
    r2 = np.asarray(fit_result.r2star)
    shape = r2.shape
    findings, organs_out, notes = [], [], []
    phase = focal_phase.prepare(complex_signal, signal, echo_times_ms,
                                ijk_to_ras, field_strength_t, precession_clockwise, shape)
    for value, name, organ, domain, lesions in organ_domains(regions, shape):
        if organ not in options.organs:
            continue
        areas, info = analyse_organ(r2, fit_result.uncertainty, fit_result.status, domain,
                                    voxel_volume_ml, options)
        info.update(region=name, label_value=int(value), organ=organ, includes_lesions=lesions,
                    n_findings=len(areas))
        organs_out.append(info)
        areas.sort(key=lambda a: -a["n_voxels"])
        for area in areas:
            mask = area.pop("mask")
            centre_kji, ras, slices = _centroid(mask, ijk_to_ras)
            f = {"id": f"F{len(findings) + 1}", "label_value": len(findings) + 1,
                 "region": name, "organ": organ, "kind": area["kind"],
                 "volume_ml": (area["n_voxels"] * voxel_volume_ml) if voxel_volume_ml else None,
                 **{k: v for k, v in area.items() if k != "kind"}}
            f["ratio_r2star"] = (f["r2star_median"] / f["background_r2star_median"]
                                 if f["r2star_median"] is not None and f["background_r2star_median"]
                                 else None)
            f["centroid_ras"] = ras
            f["centroid_kji"] = centre_kji.tolist()
            f["slice_k"] = int(round(centre_kji[0]))
            f["slices_k"] = list(slices)
            f["confidence"] = confidence(f, options.coverage_factor)
            if f["kind"] == DENSE:
                f["field_shift"] = focal_phase.field_shift(phase, mask, domain)
            else:
                f["field_shift"] = None
            f["reading"] = reading(f, organ)
            f["matched_lesion"] = None
            f["mask_runs"] = mask_runs(mask)
            findings.append(f)
    if not organs_out:
        notes.append("no liver, spleen, kidney or pancreas region: no focal analysis")
    settings = asdict(options)
    settings["organs"] = list(options.organs)
    return {"findings": findings, "organs": organs_out, "settings": settings,
            "grid_shape": list(shape), "phase": focal_phase.describe(phase), "notes": notes,
            "references": [BELAY_2018, IDILMAN_2016],
            "heterogeneity_phantom_range": {"excess_cv": list(PHANTOM_EXCESS_CV_RANGE),
                                            "source": "IronMapping phantom, homogeneous organs, "
                                                      "SNR 20-100 (benchmark_focal.py)"}}


def match_lesions(findings: list, lesion_masks: dict, shape) -> dict:
    """User-drawn lesions matched with overlapping findings.

    Each matched finding gets "matched_lesion".

    Parameters
    ----------
    findings : list of dict
        With "mask_runs".
    lesion_masks : dict of str to bool ndarray, shape (k, j, i)
    shape : tuple of int
        (k, j, i).

    Returns
    -------
    dict
        {lesion name: {"finding", "kind", "overlap_fraction_of_lesion",
        "overlap_fraction_of_finding"} or None}.
    """
    out = {}
    masks = [mask_from_runs(f["mask_runs"], shape) for f in findings]
    for name, lesion in lesion_masks.items():
        n_lesion = int(np.count_nonzero(lesion))
        best = None
        for f, m in zip(findings, masks):
            overlap = int(np.count_nonzero(m & lesion))
            if overlap and (best is None or overlap > best[0]):
                best = (overlap, f, int(m.sum()))
        if best is None:
            out[name] = None
            continue
        overlap, f, n_f = best
        f["matched_lesion"] = name
        out[name] = {"finding": f["id"], "kind": f["kind"],
                     "overlap_fraction_of_lesion": overlap / n_lesion if n_lesion else None,
                     "overlap_fraction_of_finding": overlap / n_f}
    return out


# --------------------------------------------------------------------------- table / CSV

FOCAL_TABLE_COLUMNS = (
    ("Finding", "id"), ("Region", "region"), ("Kind", "kind"), ("Volume (mL)", "volume_ml"),
    ("Voxels (n)", "n_voxels"), ("R2* median (1/s)", "r2star_median"),
    ("Background R2* median (1/s)", "background_r2star_median"),
    ("Difference (1/s)", "difference_r2star"), ("Ratio to background", "ratio_r2star"),
    ("Slice (k)", "slice_k"),
)


def findings_table(findings: list) -> list[dict]:
    """One row per finding, units in the column names (CSV, Slicer table, report).

    Parameters
    ----------
    findings : list of dict

    Returns
    -------
    list of dict
        Keyed by `findings_columns`.
    """
    rows = []
    for f in findings or []:
        row = {header: f.get(key) for header, key in FOCAL_TABLE_COLUMNS}
        ras = f.get("centroid_ras")
        for n, axis in enumerate(("R", "A", "S")):
            row[f"Centroid {axis} (mm)"] = None if ras is None else float(ras[n])
        shift = f.get("field_shift") or {}
        row["Field shift"] = shift.get("sign") or (shift.get("reason") if shift else None)
        row["Confidence"] = f.get("confidence")
        row["Matched lesion"] = f.get("matched_lesion")
        row["Reading"] = f.get("reading")
        rows.append(row)
    return rows


def findings_columns() -> list[str]:
    """Column labels of `findings_table`, in order."""
    return ([h for h, _ in FOCAL_TABLE_COLUMNS] + [f"Centroid {a} (mm)" for a in "RAS"]
            + ["Field shift", "Confidence", "Matched lesion", "Reading"])


def write_focal_csv(summary: dict, path):
    """Write focal_findings.csv from summary["focal_findings"] (header only when none).

    Parameters
    ----------
    summary : dict
    path : str or Path

    Returns
    -------
    Path

    Raises
    ------
    InputError, OutputError
        As :func:`IronMapping.fileio.write_text`.
    """
    from .fileio import write_csv

    return write_csv(path, findings_columns(), findings_table(summary.get("focal_findings") or []))
