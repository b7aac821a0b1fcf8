"""Abdominal digital reference object: a few axial slices of an upper abdomen with known truth.

    >>> from IronMapping.phantom_abdomen import make_abdomen_phantom, make_acquisition
    >>> ph = make_abdomen_phantom(liver_r2star=600.0, snr=40.0, coils=8)
    >>> ph.image.signal.shape                  # (n_echoes, k, j, i)
    >>> ph.truth_median("liver")               # truth R2*, 1/s (with texture)
    >>> ph.noise_sigma_map                     # truth noise SD per channel, [k, j, i]
    >>> ph = make_acquisition("parallel-imaging")   # one of ACQUISITIONS

Anatomy (axial, patient supine, Slicer array order [k, j, i] = [inferior->superior,
anterior->posterior, patient right->left]): a body outline that is not an ellipse (flatter
back, a few low-order bumps), subcutaneous fat with the six-peak fat spectrum (so its signal
oscillates across echoes), an abdominal-wall muscle layer, liver (with a left lobe), stomach
with a gas bubble, pancreas, spleen, two kidneys (lower slices), aorta and inferior vena cava,
vertebral body (fatty marrow), paraspinal muscles, the posterior lung bases in the upper slices
(proton density 6 % of liver and T2* about 1 ms: at the noise floor from the first echo) and
optionally the heart (myocardium ring around the blood pool) in the top slices. S0 and R2* carry
a smooth texture (a few % SD) and S0 a receive-coil shading, so no organ is a constant.

Noise is the root-sum-of-squares magnitude of ``coils`` channels (exact noncentral chi, from
``IronMapping.phantom.noncentral_chi``), with an optional parallel-imaging noise map (g-factor:
noise ``g_factor_ratio`` times higher at the centre of the field of view than at its edge).
Acquisition variants (air around the body, field of view cropped to the abdomen, background
zero-filled by the scanner, integer magnitudes, short first echo, 3-4 echo protocols) are
functions of a phantom or named presets in ``ACQUISITIONS``.

The values are typical of the tissues they name (T2* of lung about 1 ms at 1.5 T, adipose
tissue about 90 % fat), chosen for tests; they are truth for tests, not reference ranges.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .errors import InputError
from .fatmodel import fat_phasor
from .image import MultiEchoImage
from .phantom import (FIELD_SCALING_3T, FIELD_SCALING_3T_DEFAULT, Phantom, default_echo_times_ms,
                      noncentral_chi)

ABDOMEN_LABELS = {
    1: "liver", 2: "spleen", 3: "pancreas", 4: "kidney", 5: "skeletal muscle",
    6: "vertebral marrow", 7: "subcutaneous fat", 8: "lung", 9: "myocardium", 10: "blood",
    11: "stomach", 12: "bowel gas", 13: "soft tissue",
}
_VALUE = {name: value for value, name in ABDOMEN_LABELS.items()}

# Per tissue: R2* at 1.5 T (1/s), S0 relative to liver, fat fraction (0..1).
TISSUES = {
    "liver": (30.0, 1.00, 0.0),
    "spleen": (25.0, 1.10, 0.0),
    "pancreas": (30.0, 0.95, 0.05),
    "kidney": (21.0, 1.15, 0.0),
    "skeletal muscle": (28.0, 0.80, 0.02),
    "vertebral marrow": (120.0, 0.90, 0.40),
    "subcutaneous fat": (35.0, 1.50, 0.90),
    "lung": (900.0, 0.06, 0.0),
    "myocardium": (35.0, 0.90, 0.0),
    "blood": (15.0, 1.10, 0.0),
    "stomach": (20.0, 0.70, 0.0),
    "bowel gas": (0.0, 0.0, 0.0),
    "soft tissue": (25.0, 0.70, 0.20),
}

# Body outline, mm: half-width (patient right-left), anterior and posterior half-depths.
BODY_HALF_WIDTH_MM = 165.0
BODY_ANTERIOR_MM = 118.0
BODY_POSTERIOR_MM = 108.0
MUSCLE_WALL_MM = 9.0

# Organs: (name, centre (u, v) mm, radii (u, v) mm, in-plane angle deg, slab centre, slab radius)
# u: towards the patient's left (array i), v: towards posterior (array j); the slab coordinate
# runs from -1 (lowest slice) to +1 (highest slice). Painted in this order inside the muscle wall.
_ORGANS = [
    ("liver", (-62.0, 0.0), (72.0, 78.0), 0.0, 0.0, np.inf),
    ("liver", (5.0, -48.0), (48.0, 30.0), -15.0, 0.0, np.inf),
    ("stomach", (55.0, -30.0), (38.0, 30.0), 20.0, 0.0, np.inf),
    ("bowel gas", (58.0, -50.0), (22.0, 10.0), 20.0, 0.0, np.inf),
    ("pancreas", (22.0, 12.0), (48.0, 11.0), 12.0, 0.0, np.inf),
    ("spleen", (98.0, 30.0), (28.0, 52.0), 35.0, 0.0, np.inf),
    ("blood", (-22.0, 38.0), (11.0, 11.0), 0.0, 0.0, np.inf),     # inferior vena cava
    ("blood", (12.0, 42.0), (11.0, 11.0), 0.0, 0.0, np.inf),      # aorta
    ("kidney", (-68.0, 62.0), (27.0, 42.0), -30.0, -1.0, 1.5),
    ("kidney", (68.0, 62.0), (27.0, 42.0), 30.0, -1.0, 1.5),
    ("vertebral marrow", (0.0, 62.0), (20.0, 19.0), 0.0, 0.0, np.inf),
    ("skeletal muscle", (-38.0, 88.0), (26.0, 17.0), 0.0, 0.0, np.inf),   # paraspinal
    ("skeletal muscle", (38.0, 88.0), (26.0, 17.0), 0.0, 0.0, np.inf),
    ("lung", (-95.0, 55.0), (45.0, 50.0), 0.0, 1.6, 1.7),
    ("lung", (95.0, 55.0), (45.0, 50.0), 0.0, 1.6, 1.7),
]
_HEART = ((30.0, -42.0), (52.0, 42.0), 30.0, 1.6, 1.3)
_BLOOD_POOL = 0.55  # blood pool radius as a fraction of the heart's outer radius

# Echo-time protocols (ms). "kellman-3"/"kellman-4": the 3- and 4-echo 1.5 T protocols of the
# NIH (Kellman) fat-water sample data (protocol_parameters.txt beside PKdata9.mat).
PROTOCOLS = {
    "standard": None,                                    # default_echo_times_ms(field)
    "short-te": 0.9 + 0.8 * np.arange(12),               # TE1 0.9 ms, dTE 0.8 ms (bipolar)
    "kellman-4": np.array([1.55, 3.82, 6.09, 8.36]),
    "kellman-3": np.array([1.53, 3.76, 5.99]),
}


@dataclass
class AbdomenPhantom(Phantom):
    """A synthetic abdominal multi-echo study with its truth (extends ``phantom.Phantom``).

    Attributes
    ----------
    noise_sigma : float
        Noise SD per real channel at the edge of the field of view (the whole image without
        parallel imaging); signal units.
    noise_sigma_map : float32 ndarray, shape (k, j, i)
        Truth noise SD per channel in every voxel (signal units).
    body : bool ndarray, shape (k, j, i)
        Inside the body outline.
    region_s0, region_fat_fraction : dict of str to float
        Nominal S0 (signal units) and fat fraction (0..1) per region.
    acquisition : str
        Name of the acquisition variant.
    description : str
        One line saying what it is.
    quantisation_step : float
        1 for integer magnitudes, 0 for floating point.
    """

    noise_sigma_map: np.ndarray | None = None
    body: np.ndarray | None = None
    region_s0: dict = field(default_factory=dict)
    region_fat_fraction: dict = field(default_factory=dict)
    acquisition: str = "air"
    description: str = ""
    quantisation_step: float = 0.0

    def mask(self, name: str) -> np.ndarray:
        """A region's voxels.

        Parameters
        ----------
        name : str
            Region name (see ABDOMEN_LABELS).

        Returns
        -------
        bool ndarray, shape (k, j, i)

        Raises
        ------
        InputError
            For an unknown region.
        """
        if name not in _VALUE:
            raise InputError(f"Unknown region {name!r}; choose one of {sorted(_VALUE)}.")
        return self.labels == _VALUE[name]

    def truth_median(self, name: str) -> float:
        """Median truth R2* over a region, texture included.

        Parameters
        ----------
        name : str
            Region name (see ABDOMEN_LABELS).

        Returns
        -------
        float
            R2* in 1/s.
        """
        return float(np.median(self.r2star[self.mask(name)]))

    def local_sigma(self, name: str) -> float:
        """Median truth noise SD (per channel) over a region.

        Parameters
        ----------
        name : str
            Region name (see ABDOMEN_LABELS).

        Returns
        -------
        float
            Signal units.
        """
        return float(np.median(self.noise_sigma_map[self.mask(name)]))

    @property
    def air_fraction(self) -> float:
        """Share of the field of view outside the body."""
        return float(1.0 - self.body.mean())


def region_r2star(field_strength_t: float = 1.5, liver_r2star: float | None = None,
                  spleen_r2star: float | None = None, r2star: dict | None = None) -> dict:
    """R2* per region at a field strength.

    Defaults are 1.5 T values scaled for 3 T like ``IronMapping.phantom`` (x 2, myocardium
    x 1.7); given values are taken as they are, at the phantom's field strength.

    Parameters
    ----------
    field_strength_t : float
        Field strength in T.
    liver_r2star, spleen_r2star : float, optional
        R2* in 1/s.
    r2star : dict of str to float, optional
        {region: R2* in 1/s} for any region of ABDOMEN_LABELS.

    Returns
    -------
    dict of str to float
        R2* in 1/s.

    Raises
    ------
    InputError
        For an unknown region, or an R2* that is not a finite number >= 0.
    """
    values = {name: props[0] for name, props in TISSUES.items()}
    if field_strength_t >= 2.5:
        values = {k: v * FIELD_SCALING_3T.get(k, FIELD_SCALING_3T_DEFAULT) for k, v in values.items()}
    overrides = dict(r2star or {})
    if liver_r2star is not None:
        overrides["liver"] = liver_r2star
    if spleen_r2star is not None:
        overrides["spleen"] = spleen_r2star
    for name, value in overrides.items():
        if name not in values:
            raise InputError(f"Unknown region {name!r} in r2star; choose from {sorted(values)}.")
        if not np.isfinite(value) or value < 0:
            raise InputError(f"R2* of {name} must be a finite number >= 0 1/s; got {value}.")
        values[name] = float(value)
    return values


def echo_times(protocol: str = "standard", field_strength_t: float = 1.5) -> np.ndarray:
    """Echo times of a named protocol in PROTOCOLS.

    Parameters
    ----------
    protocol : str
        A key of PROTOCOLS ("standard": `IronMapping.phantom.default_echo_times_ms`).
    field_strength_t : float
        Field strength in T.

    Returns
    -------
    ndarray, shape (n_echoes,)
        Echo times in ms.

    Raises
    ------
    InputError
        For an unknown protocol.
    """
    if protocol not in PROTOCOLS:
        raise InputError(f"Unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}.")
    te = PROTOCOLS[protocol]
    return default_echo_times_ms(field_strength_t) if te is None else np.array(te, dtype=np.float64)


def _grid_mm(shape, voxel_size_mm):
    """In-plane coordinates u, v (mm from the field-of-view centre) and slab coordinate z."""
    nk, nj, ni = shape
    sx, sy, _ = voxel_size_mm
    u = (np.arange(ni) - (ni - 1) / 2.0) * sx
    v = (np.arange(nj) - (nj - 1) / 2.0) * sy
    z = np.zeros(1) if nk == 1 else np.linspace(-1.0, 1.0, nk)
    return np.meshgrid(z, v, u, indexing="ij")[::-1]


def _ellipse(u, v, z, centre, radii, angle_deg=0.0, z_centre=0.0, z_radius=np.inf):
    """Normalised squared distance of each voxel from an (elliptic) organ, <= 1 inside."""
    a = np.deg2rad(angle_deg)
    du, dv = u - centre[0], v - centre[1]
    pu = du * np.cos(a) + dv * np.sin(a)
    pv = -du * np.sin(a) + dv * np.cos(a)
    return (pu / radii[0]) ** 2 + (pv / radii[1]) ** 2 + ((z - z_centre) / z_radius) ** 2


def body_outline(u, v, z) -> np.ndarray:
    """Inside the body: a superellipse (flatter back) with low-order bumps, wider higher up.

    Parameters
    ----------
    u, v : ndarray
        In-plane coordinates in mm from the field-of-view centre (right-left, anterior-posterior).
    z : ndarray
        Slab coordinate, -1 (lowest slice) to 1; same shape as u and v.

    Returns
    -------
    bool ndarray, same shape
    """
    theta = np.arctan2(v, u)
    half_width = BODY_HALF_WIDTH_MM * (1.0 + 0.03 * z)
    depth = np.where(v < 0, BODY_ANTERIOR_MM, BODY_POSTERIOR_MM)
    power = np.where(v < 0, 2.0, 3.0)
    rho = (np.abs(u / half_width) ** power + np.abs(v / depth) ** power) ** (1.0 / power)
    edge = 1.0 + 0.025 * np.cos(3 * theta + 0.4) + 0.015 * np.cos(5 * theta + 1.3)
    return rho <= edge


def label_map(shape=(5, 128, 168), voxel_size_mm=(2.5, 2.5, 8.0), include_heart: bool = True):
    """The abdominal geometry on a grid.

    Parameters
    ----------
    shape : tuple of int
        Grid (k, j, i).
    voxel_size_mm : tuple of 3 float
        (i, j, k) spacing in mm.
    include_heart : bool
        Paint the heart (myocardium and blood pool).

    Returns
    -------
    labels : uint8 ndarray, shape (k, j, i)
        Values of ABDOMEN_LABELS.
    body : bool ndarray, shape (k, j, i)
    """
    u, v, z = _grid_mm(shape, voxel_size_mm)
    body = body_outline(u, v, z)
    sampling = (float(voxel_size_mm[1]), float(voxel_size_mm[0]))
    depth_mm = np.stack([ndimage.distance_transform_edt(b, sampling=sampling) for b in body])
    theta = np.arctan2(v, u)
    fat_mm = 18.0 + 6.0 * np.cos(2.0 * theta)          # thicker over the flanks
    labels = np.zeros(shape, np.uint8)
    labels[body] = _VALUE["subcutaneous fat"]
    under_fat = body & (depth_mm >= fat_mm)
    labels[under_fat] = _VALUE["skeletal muscle"]
    cavity = body & (depth_mm >= fat_mm + MUSCLE_WALL_MM)
    labels[cavity] = _VALUE["soft tissue"]
    for name, centre, radii, angle, zc, zr in _ORGANS:
        region = under_fat if name == "skeletal muscle" else cavity
        labels[region & (_ellipse(u, v, z, centre, radii, angle, zc, zr) <= 1.0)] = _VALUE[name]
    if include_heart:
        centre, radii, angle, zc, zr = _HEART
        outer = _ellipse(u, v, z, centre, radii, angle, zc, zr)
        in_plane = _ellipse(u, v, z, centre, radii, angle)
        heart = cavity & (outer <= 1.0)
        # the blood pool shrinks with the heart towards its lower edge
        pool = in_plane <= _BLOOD_POOL**2 * np.maximum(1.0 - ((z - zc) / zr) ** 2, 0.0)
        labels[heart] = _VALUE["myocardium"]
        labels[heart & pool] = _VALUE["blood"]
    return labels, body


def smooth_field(shape, voxel_size_mm, rng, correlation_mm: float = 15.0) -> np.ndarray:
    """Gaussian random field with unit SD and a correlation length of about correlation_mm.

    Parameters
    ----------
    shape : tuple of int
        Grid (k, j, i).
    voxel_size_mm : tuple of 3 float
        (i, j, k) spacing in mm.
    rng : numpy.random.Generator
    correlation_mm : float
        Correlation length in mm.

    Returns
    -------
    ndarray, shape (k, j, i)
    """
    white = rng.standard_normal(shape)
    sx, sy, sz = voxel_size_mm
    smooth = ndimage.gaussian_filter(white, (max(correlation_mm / sz, 0.5), correlation_mm / sy,
                                             correlation_mm / sx), mode="reflect")
    return smooth / smooth.std()


def g_factor_map(shape, ratio: float = 2.2) -> np.ndarray:
    """Parallel-imaging noise amplification: ``ratio`` at the centre, 1 at the corners.

    A smooth bump over the field of view (SENSE/GRAPPA amplify noise most in the centre of the
    unfolded image; Dietrich et al., JMRI 2007;26:375); the same in every slice.

    Parameters
    ----------
    shape : tuple of int
        Grid (k, j, i).
    ratio : float
        Noise at the centre over noise at the corners.

    Returns
    -------
    float64 ndarray, shape (k, j, i)
    """
    nk, nj, ni = shape
    y = np.linspace(-1.0, 1.0, nj)[:, None]
    x = np.linspace(-1.0, 1.0, ni)[None, :]
    bump = np.exp(-(x * x + y * y) / (2.0 * 0.4**2))
    g = 1.0 + (ratio - 1.0) * (bump - bump.min()) / (bump.max() - bump.min())
    return np.broadcast_to(g, shape).astype(np.float64)


def _ijk_to_ras(shape, voxel_size_mm, centre_ras):
    """Axial slices in DICOM's LPS orientation written in Slicer's RAS (x and y flip)."""
    nk, nj, ni = shape
    sx, sy, sz = voxel_size_mm
    m = np.diag([-sx, -sy, sz, 1.0])
    centre_ijk = np.array([(ni - 1) / 2.0, (nj - 1) / 2.0, (nk - 1) / 2.0])
    m[:3, 3] = np.asarray(centre_ras, dtype=np.float64) - m[:3, :3] @ centre_ijk
    return m


def make_abdomen_phantom(liver_r2star: float | None = 50.0, spleen_r2star: float | None = None,
                         r2star: dict | None = None, echo_times_ms=None,
                         field_strength_t: float = 1.5, snr: float | None = 40.0, coils: int = 8,
                         g_factor_ratio: float | None = None, s0_liver: float = 1000.0,
                         liver_fat_fraction: float = 0.0, include_heart: bool = True,
                         texture: float = 0.03, coil_shading: float = 0.15,
                         fov_mm=(420.0, 320.0), voxel_size_mm=(2.5, 2.5, 8.0), n_slices: int = 5,
                         centre_ras=(0.0, 20.0, -60.0), seed: int | None = 0,
                         texture_seed: int = 0) -> AbdomenPhantom:
    """Build the abdominal phantom with air around the body.

    Parameters
    ----------
    liver_r2star, spleen_r2star : float, optional
        R2* in 1/s at this field strength; None keeps the tissue default (1.5 T values of
        TISSUES, scaled for 3 T).
    r2star : dict of str to float, optional
        {region: R2* in 1/s} for any other region of ABDOMEN_LABELS.
    echo_times_ms : sequence of float, optional
        Echo times in ms; default ``default_echo_times_ms(field_strength_t)``.
    field_strength_t : float
        1.5 or 3 T (R2* defaults and fat frequencies follow B0).
    snr : float or None
        Liver S0 over the noise SD per channel (at the edge of the field of view when
        g_factor_ratio is set). None or inf gives noiseless data.
    coils : int
        Receive channels L of the root-sum-of-squares magnitude (noncentral chi, 2L dof).
    g_factor_ratio : float, optional
        None for uniform noise, else the noise at the field-of-view centre over the noise at
        its edge (parallel imaging, e.g. 2.2).
    s0_liver : float
        Liver S0 in signal units (scanner scaling; other tissues relative to it).
    liver_fat_fraction : float
        0..1, liver fat (six-peak spectrum, like the fat layers).
    include_heart : bool
        Paint the heart (myocardium and blood pool) in the top slices.
    texture : float
        SD of the smooth spatial variation of S0 and of R2* (fraction, e.g. 0.03).
    coil_shading : float
        S0 at the body surface higher by about this fraction than at the centre.
    fov_mm : (float, float)
        Field of view (right-left, anterior-posterior) in mm.
    voxel_size_mm : tuple of 3 float
        (i, j, k) spacing in mm.
    n_slices : int
        Number of axial slices.
    centre_ras : tuple of 3 float
        RAS (mm) of the field-of-view centre.
    seed : int or None
        Noise seed.
    texture_seed : int
        Seed of the texture (anatomy stays when the noise changes).

    Returns
    -------
    AbdomenPhantom

    Raises
    ------
    InputError
        For bad coils, n_slices, snr, g_factor_ratio or liver_fat_fraction, or unknown regions.
    """
    if int(coils) != coils or coils < 1:
        raise InputError(f"coils must be a whole number >= 1; got {coils}.")
    if n_slices < 1 or int(n_slices) != n_slices:
        raise InputError(f"n_slices must be a whole number >= 1; got {n_slices}.")
    if snr is not None and np.isfinite(snr) and snr <= 0:
        raise InputError(f"snr must be positive (or None for noiseless data); got {snr}.")
    if g_factor_ratio is not None and not g_factor_ratio >= 1.0:
        raise InputError(f"g_factor_ratio must be >= 1 (centre over edge noise); got {g_factor_ratio}.")
    if not 0.0 <= liver_fat_fraction <= 1.0:
        raise InputError(f"liver_fat_fraction must be within 0..1; got {liver_fat_fraction}.")
    voxel_size_mm = tuple(float(s) for s in voxel_size_mm)
    shape = (int(n_slices), max(int(round(fov_mm[1] / voxel_size_mm[1])), 8),
             max(int(round(fov_mm[0] / voxel_size_mm[0])), 8))
    te = np.asarray(default_echo_times_ms(field_strength_t) if echo_times_ms is None else echo_times_ms,
                    dtype=np.float64)
    truth_r2 = region_r2star(field_strength_t, liver_r2star, spleen_r2star, r2star)
    labels, body = label_map(shape, voxel_size_mm, include_heart)

    n_labels = max(ABDOMEN_LABELS) + 1
    lut_r2, lut_s0, lut_ff = (np.zeros(n_labels) for _ in range(3))
    region_s0, region_ff = {}, {}
    for value, name in ABDOMEN_LABELS.items():
        _, rel_s0, ff = TISSUES[name]
        if name == "liver":
            ff = float(liver_fat_fraction)
        lut_r2[value], lut_s0[value], lut_ff[value] = truth_r2[name], rel_s0 * s0_liver, ff
        region_s0[name], region_ff[name] = rel_s0 * s0_liver, ff
    rng_texture = np.random.default_rng(texture_seed)
    r2 = lut_r2[labels] * (1.0 + texture * smooth_field(shape, voxel_size_mm, rng_texture))
    u, v, z = _grid_mm(shape, voxel_size_mm)
    shading = 1.0 + coil_shading * np.clip((u / BODY_HALF_WIDTH_MM) ** 2 + (v / BODY_ANTERIOR_MM) ** 2, 0, 1)
    s0 = lut_s0[labels] * shading * (1.0 + texture * smooth_field(shape, voxel_size_mm, rng_texture))
    r2 = np.maximum(r2, 0.0)
    s0 = np.where(body, np.maximum(s0, 0.0), 0.0)
    ff = lut_ff[labels]

    c = fat_phasor(te, field_strength_t)
    mix = np.abs((1.0 - ff)[None] + ff[None] * c[:, None, None, None])
    amplitude = s0[None] * mix * np.exp(-np.multiply.outer(te / 1000.0, r2))

    noiseless = snr is None or not np.isfinite(snr)
    sigma = 0.0 if noiseless else float(s0_liver) / float(snr)
    g = g_factor_map(shape, g_factor_ratio) if g_factor_ratio else np.ones(shape)
    sigma_map = (sigma * g).astype(np.float32)
    if noiseless:
        signal = amplitude
    else:
        signal = noncentral_chi(amplitude, sigma_map.astype(np.float64), int(coils),
                                np.random.default_rng(seed))

    description = (f"abdomen, air around the body, liver R2* {truth_r2['liver']:g} 1/s, "
                   f"{len(te)} echoes from {te[0]:g} ms, SNR {snr}, {int(coils)} coils"
                   + (f", parallel-imaging noise map {g_factor_ratio:g} x" if g_factor_ratio else ""))
    image = MultiEchoImage(
        signal=signal.astype(np.float32), echo_times_ms=te,
        ijk_to_ras=_ijk_to_ras(shape, voxel_size_mm, centre_ras), quantity="T2*",
        field_strength_t=float(field_strength_t),
        metadata={"source": "IronMapping abdominal digital reference object",
                  "description": description, "coils": int(coils), "noise_sigma": sigma,
                  "g_factor_ratio": g_factor_ratio, "snr": None if noiseless else float(snr),
                  "seed": seed, "texture_seed": texture_seed,
                  "manufacturer": "IronMapping phantom", "series_description": "Phantom abdomen"})
    return AbdomenPhantom(
        image=image, r2star=r2.astype(np.float32), s0=s0.astype(np.float32),
        fat_fraction=ff.astype(np.float32), labels=labels, label_names=dict(ABDOMEN_LABELS),
        region_r2star=truth_r2, noise_sigma=sigma, coils=int(coils), preset="abdomen",
        noise_sigma_map=sigma_map, body=body, region_s0=region_s0, region_fat_fraction=region_ff,
        acquisition="air", description=description)


# ------------------------------------------------------------------------ acquisition variants

def _with(ph: AbdomenPhantom, signal=None, acquisition=None, note=None, **arrays) -> AbdomenPhantom:
    """A copy of the phantom with a new signal and/or cropped arrays, and a note on what changed."""
    metadata = dict(ph.image.metadata)
    if note:
        metadata["description"] = f"{metadata.get('description', '')}; {note}"
        metadata["acquisition_steps"] = list(metadata.get("acquisition_steps", [])) + [note]
    image = MultiEchoImage(signal=ph.image.signal if signal is None else signal,
                           echo_times_ms=ph.image.echo_times_ms,
                           ijk_to_ras=arrays.pop("ijk_to_ras", ph.image.ijk_to_ras),
                           quantity=ph.image.quantity, field_strength_t=ph.image.field_strength_t,
                           metadata=metadata)
    return dataclasses.replace(ph, image=image, acquisition=acquisition or ph.acquisition,
                               description=metadata["description"], **arrays)


def crop(ph: AbdomenPhantom, k: slice = slice(None), j: slice = slice(None),
         i: slice = slice(None), acquisition: str | None = None) -> AbdomenPhantom:
    """Crop every array and move the origin so each voxel keeps its RAS position.

    Parameters
    ----------
    ph : AbdomenPhantom
    k, j, i : slice
        Contiguous slices (step 1) along each axis.
    acquisition : str, optional
        Name of the new acquisition variant.

    Returns
    -------
    AbdomenPhantom

    Raises
    ------
    InputError
        For slices with a step, or a crop that leaves no voxel.
    """
    box = (k, j, i)
    starts = [s.indices(n)[0] for s, n in zip(box, ph.labels.shape)]
    if any(s.step not in (None, 1) for s in box):
        raise InputError("crop takes contiguous slices (step 1).")
    m = ph.image.ijk_to_ras.copy()
    m[:3, 3] = m[:3, :3] @ np.array([starts[2], starts[1], starts[0]], dtype=np.float64) + m[:3, 3]
    cropped = ph.labels[box]
    if cropped.size == 0:
        raise InputError(f"crop {box} leaves no voxel of the {ph.labels.shape} grid.")
    return _with(ph, signal=ph.image.signal[(slice(None),) + box], acquisition=acquisition,
                 note=f"cropped to k {k.start}:{k.stop}, j {j.start}:{j.stop}, i {i.start}:{i.stop}",
                 ijk_to_ras=m, r2star=ph.r2star[box], s0=ph.s0[box], fat_fraction=ph.fat_fraction[box],
                 labels=cropped, noise_sigma_map=ph.noise_sigma_map[box], body=ph.body[box])


def largest_box(inside: np.ndarray) -> tuple[int, int, int, int]:
    """The largest all-True rectangle of a 2-D mask.

    Parameters
    ----------
    inside : bool ndarray, shape (rows, cols)

    Returns
    -------
    (int, int, int, int)
        (row0, row1, col0, col1), half-open.

    Raises
    ------
    InputError
        When the mask holds no True voxel.
    """
    inside = np.asarray(inside, dtype=bool)
    n_rows, n_cols = inside.shape
    heights = np.zeros(n_cols, dtype=int)
    best = (0, 0, 0, 0, 0)
    for r in range(n_rows):
        heights = np.where(inside[r], heights + 1, 0)
        stack: list[tuple[int, int]] = []          # (start column, height), heights increasing
        for c in range(n_cols + 1):
            h = int(heights[c]) if c < n_cols else 0
            start = c
            while stack and stack[-1][1] >= h:
                s, sh = stack.pop()
                if sh * (c - s) > best[0]:
                    best = (sh * (c - s), r - sh + 1, r + 1, s, c)
                start = s
            stack.append((start, h))
    if best[0] == 0:
        raise InputError("No voxel inside the body: nothing to crop to.")
    return best[1:]


def crop_to_body(ph: AbdomenPhantom) -> AbdomenPhantom:
    """Field of view cropped to the abdomen: the largest box inside the body in every slice.

    No air is left, as after Slicer's Crop Volume with an ROI drawn inside the body.

    Parameters
    ----------
    ph : AbdomenPhantom

    Returns
    -------
    AbdomenPhantom
    """
    r0, r1, c0, c1 = largest_box(ph.body.all(axis=0))
    return crop(ph, slice(None), slice(r0, r1), slice(c0, c1), acquisition="cropped")


def below_lungs(ph: AbdomenPhantom) -> AbdomenPhantom:
    """Only the lowest slices that hold neither lung nor heart (no tissue at the noise floor).

    Parameters
    ----------
    ph : AbdomenPhantom

    Returns
    -------
    AbdomenPhantom

    Raises
    ------
    InputError
        When the lowest slice already holds lung or heart.
    """
    above = ph.mask("lung").any(axis=(1, 2)) | ph.mask("myocardium").any(axis=(1, 2))
    if above[0]:
        raise InputError("The lowest slice already holds lung or heart: add slices to the phantom.")
    top = int(np.argmax(above)) if above.any() else above.size
    return crop(ph, slice(0, top), acquisition=ph.acquisition)


def zero_fill_background(ph: AbdomenPhantom, margin_mm: float = 5.0) -> AbdomenPhantom:
    """Signal set to exactly 0 outside the body outline (grown by margin_mm), as scanners do.

    Parameters
    ----------
    ph : AbdomenPhantom
    margin_mm : float
        Margin in mm around the body that keeps its signal.

    Returns
    -------
    AbdomenPhantom
    """
    keep = ph.body
    if margin_mm > 0:
        spacing = ph.image.spacing_mm
        it = max(int(round(margin_mm / min(spacing[0], spacing[1]))), 1)
        structure = np.zeros((1, 3, 3), bool)
        structure[0] = ndimage.generate_binary_structure(2, 1)
        keep = ndimage.binary_dilation(keep, structure, iterations=it)
    signal = np.where(keep[None], ph.image.signal, 0.0).astype(np.float32)
    return _with(ph, signal=signal, acquisition="zero-filled",
                 note=f"background zero-filled beyond {margin_mm:g} mm outside the body")


def quantise(ph: AbdomenPhantom, zero_background: bool = True) -> AbdomenPhantom:
    """Integer magnitudes (rounded), as stored by scanners; optionally exactly 0 outside the body.

    Rounding adds noise of its own: uniform, SD 1/sqrt(12) = 0.29 signal units.

    Parameters
    ----------
    ph : AbdomenPhantom
    zero_background : bool
        Also set the background to exactly 0.

    Returns
    -------
    AbdomenPhantom
        ``quantisation_step`` 1.
    """
    source = zero_fill_background(ph, margin_mm=0.0) if zero_background else ph
    signal = np.rint(source.image.signal).astype(np.float32)
    note = "magnitudes rounded to integers" + (", background exactly 0" if zero_background else "")
    out = _with(source, signal=signal, acquisition="quantised", note=note)
    out.quantisation_step = 1.0
    return out


# ------------------------------------------------------------------------ named acquisitions

ACQUISITIONS = {
    "air": ("air around the body", dict(liver_r2star=150.0), ()),
    "cropped": ("field of view cropped to the abdomen (no air)", dict(liver_r2star=150.0), ("crop",)),
    "cropped-below-lungs": ("field of view cropped to the abdomen below the lungs (no air, no lung)",
                            dict(liver_r2star=150.0), ("crop", "below-lungs")),
    "cropped-iron": ("cropped, iron-loaded liver and spleen",
                     dict(liver_r2star=600.0, spleen_r2star=300.0), ("crop",)),
    "zero-filled": ("background zero-filled outside the body by the scanner",
                    dict(liver_r2star=600.0, coils=4), ("zero-fill",)),
    "parallel-imaging": ("parallel-imaging noise map, 2.2 x higher in the centre than at the edge",
                         dict(liver_r2star=600.0, g_factor_ratio=2.2, coils=16), ()),
    "severe-1300": ("severe liver iron, R2* 1300 1/s, TE1 0.9 ms, SNR 27",
                    dict(liver_r2star=1300.0, spleen_r2star=400.0, snr=27.0, protocol="short-te"), ()),
    "severe-1300-snr67": ("severe liver iron, R2* 1300 1/s, TE1 0.9 ms, SNR 67",
                          dict(liver_r2star=1300.0, spleen_r2star=400.0, snr=67.0, protocol="short-te"), ()),
    "severe-2000": ("severe liver iron, R2* 2000 1/s, TE1 0.9 ms, SNR 27",
                    dict(liver_r2star=2000.0, spleen_r2star=400.0, snr=27.0, protocol="short-te"), ()),
    "quantised": ("3 T, integer magnitudes, background exactly zero",
                  dict(liver_r2star=400.0, field_strength_t=3.0, s0_liver=60.0, snr=30.0, coils=12),
                  ("quantise",)),
    "four-echo": ("4 echoes (1.55-8.36 ms), one receive channel",
                  dict(liver_r2star=150.0, protocol="kellman-4", coils=1), ()),
    "three-echo": ("3 echoes (1.53-5.99 ms)", dict(liver_r2star=150.0, protocol="kellman-3"), ()),
}
QUICK_GRID = dict(voxel_size_mm=(5.0, 5.0, 10.0), n_slices=4)


def make_acquisition(name: str, quick: bool = False, seed: int | None = 0, **overrides) -> AbdomenPhantom:
    """The phantom under a named acquisition of ACQUISITIONS.

    Parameters
    ----------
    name : str
        A key of ACQUISITIONS.
    quick : bool
        A coarse 4-slice grid (5 x 5 x 10 mm voxels).
    seed : int or None
        Noise seed.
    **overrides
        Passed to `make_abdomen_phantom` (``protocol=`` names PROTOCOLS).

    Returns
    -------
    AbdomenPhantom

    Raises
    ------
    InputError
        For an unknown acquisition.
    """
    if name not in ACQUISITIONS:
        raise InputError(f"Unknown acquisition {name!r}; choose one of {list(ACQUISITIONS)}.")
    description, kwargs, steps = ACQUISITIONS[name]
    kwargs = {**(QUICK_GRID if quick else {}), **kwargs, **overrides}
    protocol = kwargs.pop("protocol", None)
    if protocol is not None and "echo_times_ms" not in kwargs:
        kwargs["echo_times_ms"] = echo_times(protocol, kwargs.get("field_strength_t", 1.5))
    ph = make_abdomen_phantom(seed=seed, **kwargs)
    for step in steps:
        ph = {"crop": crop_to_body, "below-lungs": below_lungs, "zero-fill": zero_fill_background,
              "quantise": quantise}[step](ph)
    return dataclasses.replace(ph, acquisition=name, description=description)
