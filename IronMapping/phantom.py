"""Digital reference object: a multi-echo abdomen/neck phantom with known R2* per organ.

    >>> from IronMapping.phantom import make_phantom
    >>> ph = make_phantom("neonatal-haemochromatosis", snr=50, coils=8, seed=1)
    >>> ph.image.signal.shape          # (n_echoes, k, j, i)
    >>> ph.region_r2star["pancreas"]   # truth, 1/s

Organs are ellipsoids (the myocardium a ring) inside a body ellipse; air around it. The
magnitude is noncentral-chi with `coils` receive channels (Rician for one coil), so the noise
floor behaves as on a scanner. The R2* values of the presets are chosen to be typical of
the conditions they name (normal liver after Obrzut 2020) and are truth for tests, not reference
ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .fatmodel import fat_phasor
from .image import MultiEchoImage

LABELS = {
    1: "liver", 2: "spleen", 3: "pancreas", 4: "myocardium", 5: "thyroid", 6: "kidney",
    7: "skeletal muscle", 8: "liver lesion", 9: "soft tissue",
}

# Proton density (S0) per region, liver = 1000; SNR is defined as 1000 / sigma.
S0 = {"liver": 1000.0, "spleen": 1100.0, "pancreas": 950.0, "myocardium": 900.0,
      "thyroid": 1000.0, "kidney": 1150.0, "skeletal muscle": 800.0, "liver lesion": 1050.0,
      "soft tissue": 700.0}

# R2* at 1.5 T in 1/s. Normal liver ~29 1/s (Obrzut et al. 2020, 100 volunteers); kidney ~21 1/s.
PRESETS = {
    "normal": {
        "description": "No iron overload.",
        "r2star": {"liver": 30.0, "spleen": 25.0, "pancreas": 30.0, "myocardium": 30.0,
                   "thyroid": 30.0, "kidney": 21.0, "skeletal muscle": 28.0,
                   "liver lesion": 30.0, "soft tissue": 20.0},
    },
    "neonatal-haemochromatosis": {
        "description": ("Parenchymal/extrahepatic siderosis: liver, pancreas, thyroid and "
                        "myocardium iron-loaded, spleen spared; an iron-sparing liver lesion."),
        "r2star": {"liver": 450.0, "spleen": 28.0, "pancreas": 280.0, "myocardium": 130.0,
                   "thyroid": 300.0, "kidney": 22.0, "skeletal muscle": 28.0,
                   "liver lesion": 60.0, "soft tissue": 20.0},
    },
    "transfusional": {
        "description": ("Reticuloendothelial pattern: liver and spleen loaded, pancreas and "
                        "heart normal; an iron-containing (isointense) liver lesion."),
        "r2star": {"liver": 650.0, "spleen": 400.0, "pancreas": 35.0, "myocardium": 30.0,
                   "thyroid": 32.0, "kidney": 22.0, "skeletal muscle": 28.0,
                   "liver lesion": 650.0, "soft tissue": 20.0},
    },
}

# Approximate ratio R2*(3 T)/R2*(1.5 T): ~2 in liver and other organs (Ina 2018, Acta Radiol),
# ~1.6-1.75 in myocardium (approximate); used only to make 3 T phantoms.
FIELD_SCALING_3T = {"myocardium": 1.7}
FIELD_SCALING_3T_DEFAULT = 2.0

# Ellipsoids in normalised (i, j, k) coordinates: centre, radii. Painted in this order.
_GEOMETRY = [
    ("soft tissue", (0.50, 0.50, 0.50), (0.46, 0.44, 2.0)),
    ("skeletal muscle", (0.40, 0.86, 0.50), (0.06, 0.05, 2.0)),
    ("skeletal muscle", (0.60, 0.86, 0.50), (0.06, 0.05, 2.0)),
    ("liver", (0.32, 0.47, 0.45), (0.17, 0.22, 0.42)),
    ("liver lesion", (0.28, 0.43, 0.45), (0.045, 0.06, 0.2)),
    ("spleen", (0.74, 0.56, 0.45), (0.08, 0.12, 0.3)),
    ("pancreas", (0.56, 0.40, 0.45), (0.10, 0.04, 0.22)),
    ("kidney", (0.63, 0.74, 0.40), (0.05, 0.08, 0.3)),
    ("myocardium", (0.55, 0.22, 0.80), (0.10, 0.10, 0.3)),
    ("thyroid", (0.50, 0.10, 0.92), (0.035, 0.025, 0.12)),
]
_MYOCARDIUM_INNER = 0.6  # blood pool radius as a fraction of the outer radius


@dataclass
class Phantom:
    """A synthetic multi-echo study with its truth.

    Attributes
    ----------
    image : MultiEchoImage
        The magnitude echoes, shape (n_echoes, k, j, i).
    r2star : float32 ndarray, shape (k, j, i)
        Truth R2* in 1/s (0 in air).
    s0 : float32 ndarray, shape (k, j, i)
        Truth signal at TE = 0 (signal units; liver 1000).
    fat_fraction : float32 ndarray, shape (k, j, i)
        Truth fat fraction, 0..1.
    labels : uint8 ndarray, shape (k, j, i)
        Regions, see ``label_names``.
    label_names : dict of int to str
    region_r2star : dict of str to float
        Truth R2* per region in 1/s.
    noise_sigma : float
        Noise SD per real channel (signal units); 0 for noiseless data.
    coils : int
        Receive channels L of the root-sum-of-squares magnitude.
    preset : str
    focal_truth : list of dict
        ``make_focal_phantom``: the foci.
    focal_map : uint8 ndarray, shape (k, j, i), or None
        Focus n where it lies.
    field_map_hz : ndarray, shape (k, j, i), or None
        Truth field offset in Hz, with phase.
    """

    image: MultiEchoImage
    r2star: np.ndarray           # truth, 1/s, float32 [k, j, i] (0 in air)
    s0: np.ndarray               # truth, float32 [k, j, i]
    fat_fraction: np.ndarray     # truth, 0..1, float32 [k, j, i]
    labels: np.ndarray           # uint8 [k, j, i], see label_names
    label_names: dict = field(default_factory=lambda: dict(LABELS))
    region_r2star: dict = field(default_factory=dict)
    noise_sigma: float = 0.0
    coils: int = 1
    preset: str = "normal"
    focal_truth: list = field(default_factory=list)   # make_focal_phantom: the foci
    focal_map: np.ndarray | None = None                # uint8 [k, j, i], focus n where it lies
    field_map_hz: np.ndarray | None = None             # truth field offset (Hz), with phase

    @property
    def region_t2star_ms(self) -> dict:
        """Truth T2* per region in ms."""
        return {k: 1000.0 / v for k, v in self.region_r2star.items()}


def default_echo_times_ms(field_strength_t: float) -> np.ndarray:
    """Default echo times in ms.

    12 echoes, TE1 = dTE = 1.0 ms at 1.5 T; 16 echoes, TE1 = dTE = 0.6 ms at 3 T.

    Parameters
    ----------
    field_strength_t : float
        Field strength in T (3 T timing from 2.5 T up).

    Returns
    -------
    ndarray, shape (n_echoes,)
    """
    if field_strength_t >= 2.5:
        return 0.6 * np.arange(1, 17)
    return 1.0 * np.arange(1, 13)


def label_map(shape=(16, 96, 128)) -> np.ndarray:
    """Region labels of the phantom geometry for a grid shape.

    Parameters
    ----------
    shape : tuple of int
        Grid (k, j, i).

    Returns
    -------
    uint8 ndarray, shape (k, j, i)
        Values of ``LABELS``.
    """
    nk, nj, ni = shape
    k, j, i = np.meshgrid((np.arange(nk) + 0.5) / nk, (np.arange(nj) + 0.5) / nj,
                          (np.arange(ni) + 0.5) / ni, indexing="ij")
    names = {v: k_ for k_, v in LABELS.items()}
    labels = np.zeros(shape, np.uint8)
    for name, (ci, cj, ck), (ri, rj, rk) in _GEOMETRY:
        d2 = ((i - ci) / ri) ** 2 + ((j - cj) / rj) ** 2 + ((k - ck) / rk) ** 2
        inside = d2 <= 1.0
        if name == "myocardium":
            inner = ((i - ci) / ri) ** 2 + ((j - cj) / rj) ** 2 <= _MYOCARDIUM_INNER**2
            labels[inside & inner] = names["soft tissue"]
            inside &= ~inner
        labels[inside] = names[name]
    return labels


def region_r2star(preset: str, field_strength_t: float = 1.5) -> dict:
    """Truth R2* per region for a preset at a field strength.

    Parameters
    ----------
    preset : str
        A key of ``PRESETS``.
    field_strength_t : float
        Field strength in T; from 2.5 T the 3 T scaling applies.

    Returns
    -------
    dict of str to float
        R2* in 1/s.

    Raises
    ------
    InputError
        For an unknown preset.
    """
    if preset not in PRESETS:
        raise InputError(f"Unknown phantom preset {preset!r}; choose one of {sorted(PRESETS)}.")
    values = dict(PRESETS[preset]["r2star"])
    if field_strength_t >= 2.5:
        values = {k: v * FIELD_SCALING_3T.get(k, FIELD_SCALING_3T_DEFAULT) for k, v in values.items()}
    return values


def noncentral_chi(amplitude, sigma, coils, rng):
    """Root-sum-of-squares magnitude of ``coils`` channels with Gaussian noise sigma.

    The whole amplitude is put in one real channel; the other 2L-1 real channels hold noise,
    which gives exactly the noncentral chi distribution of RSS magnitude.

    Parameters
    ----------
    amplitude : ndarray
        Noiseless signal, any shape (signal units).
    sigma : float
        Noise SD per real channel (signal units).
    coils : int
        Receive channels L.
    rng : numpy.random.Generator

    Returns
    -------
    float64 ndarray, same shape as ``amplitude``
    """
    amplitude = np.asarray(amplitude, dtype=np.float64)
    real = amplitude + sigma * rng.standard_normal(amplitude.shape)
    rest = sigma * sigma * rng.chisquare(2 * coils - 1, amplitude.shape)
    return np.sqrt(real * real + rest)


def make_phantom(preset: str = "neonatal-haemochromatosis", shape=(16, 96, 128), echo_times_ms=None,
                 field_strength_t: float = 1.5, snr: float = 50.0, coils: int = 1,
                 fat_fraction=None, seed: int | None = 0, voxel_size_mm=(3.0, 3.0, 6.0)) -> Phantom:
    """Build a multi-echo phantom with known truth.

    Parameters
    ----------
    preset : str
        "normal", "neonatal-haemochromatosis" or "transfusional".
    shape : tuple of int
        Grid (k, j, i).
    echo_times_ms : sequence of float, optional
        Echo times in ms; the default depends on the field strength (`default_echo_times_ms`).
    field_strength_t : float
        1.5 or 3 T (R2* scaled for 3 T, fat frequencies follow B0).
    snr : float or None
        S0 of liver (1000) over the noise SD per channel. None or inf gives noiseless data.
    coils : int
        Receive channels L of the root-sum-of-squares magnitude (noncentral chi, 2L dof).
    fat_fraction : float or dict, optional
        A number (applied to liver and lesion) or {region: fraction}, 0..1.
    seed : int or None
        Random seed of the noise.
    voxel_size_mm : tuple of 3 float
        (i, j, k) spacing in mm.

    Returns
    -------
    Phantom

    Raises
    ------
    InputError
        For a bad shape, coil count or fat fraction, or an unknown preset.
    """
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"shape must be (k, j, i) with positive sizes; got {shape}.")
    if int(coils) != coils or coils < 1:
        raise InputError(f"coils must be a whole number >= 1; got {coils}.")
    te = np.asarray(default_echo_times_ms(field_strength_t) if echo_times_ms is None else echo_times_ms,
                    dtype=np.float64)
    truth = region_r2star(preset, field_strength_t)
    labels = label_map(tuple(shape))
    lut_r2 = np.zeros(len(LABELS) + 1, np.float32)
    lut_s0 = np.zeros(len(LABELS) + 1, np.float32)
    lut_ff = np.zeros(len(LABELS) + 1, np.float32)
    if isinstance(fat_fraction, dict):
        fractions = fat_fraction
    elif fat_fraction is None:
        fractions = {}
    else:
        fractions = {"liver": float(fat_fraction), "liver lesion": float(fat_fraction)}
    for value, name in LABELS.items():
        lut_r2[value] = truth[name]
        lut_s0[value] = S0[name]
        ff = float(fractions.get(name, 0.0))
        if not 0.0 <= ff <= 1.0:
            raise InputError(f"fat fraction of {name} must be within 0..1; got {ff}.")
        lut_ff[value] = ff
    r2 = lut_r2[labels]
    s0 = lut_s0[labels]
    ff = lut_ff[labels]

    decay = np.exp(-np.multiply.outer(te / 1000.0, r2))        # (E, k, j, i)
    if np.any(ff > 0):
        c = fat_phasor(te, field_strength_t)                      # (E,) complex
        mix = np.abs((1.0 - ff)[None] + ff[None] * c[:, None, None, None])
        amplitude = s0[None] * mix * decay
    else:
        amplitude = s0[None] * decay
    noiseless = snr is None or not np.isfinite(snr)
    sigma = 0.0 if noiseless else 1000.0 / float(snr)
    if noiseless:
        signal = amplitude
    else:
        rng = np.random.default_rng(seed)
        signal = noncentral_chi(amplitude, sigma, int(coils), rng)

    sx, sy, sz = voxel_size_mm
    nk, nj, ni = shape
    # Axial slices in the DICOM LPS orientation, written in Slicer's RAS: x and y flip.
    ijk_to_ras = np.diag([-sx, -sy, sz, 1.0])
    ijk_to_ras[:3, 3] = [sx * (ni - 1) / 2.0, sy * (nj - 1) / 2.0, -sz * (nk - 1) / 2.0]
    image = MultiEchoImage(
        signal=signal.astype(np.float32), echo_times_ms=te, ijk_to_ras=ijk_to_ras,
        quantity="T2*", field_strength_t=float(field_strength_t),
        metadata={"source": "IronMapping digital reference object", "preset": preset,
                  "description": PRESETS[preset]["description"], "coils": int(coils),
                  "noise_sigma": sigma, "snr": None if noiseless else float(snr), "seed": seed,
                  "manufacturer": "IronMapping phantom", "series_description": f"Phantom {preset}"})
    return Phantom(image=image, r2star=r2, s0=s0, fat_fraction=ff, labels=labels,
                   label_names=dict(LABELS), region_r2star=truth, noise_sigma=sigma,
                   coils=int(coils), preset=preset)


# --------------------------------------------------------------------------- focal lesions

@dataclass
class FocalLesion:
    """A spherical focus painted into a phantom region, with known truth.

    Attributes
    ----------
    name : str
        Label of the focus.
    region : str
        The phantom region it lies in (it never leaves it).
    centre : tuple of 3 float
        Normalised (i, j, k) position as in the organ geometry (snapped to a voxel).
    volume_ml : float
        Nominal sphere volume in mL (the painted volume is in the truth).
    r2star : float
        R2* in 1/s at 1.5 T (scaled like its region at 3 T).
    susceptibility_ppm : float
        Susceptibility relative to the region (for the phase), 0 for none.
    """

    name: str
    region: str
    centre: tuple
    volume_ml: float
    r2star: float
    susceptibility_ppm: float = 0.0


# Standard foci per preset: iron-sparing in a loaded liver, iron-dense and calcium-like in a
# normal liver, a small dense focus in the spleen. Values are truth for tests, not norms.
FOCAL_LESIONS = {
    "neonatal-haemochromatosis": [
        FocalLesion("liver sparing 3 mL", "liver", (0.40, 0.60, 0.45), 3.0, 60.0),
        FocalLesion("liver sparing 1 mL", "liver", (0.22, 0.60, 0.45), 1.0, 60.0),
    ],
    "normal": [
        FocalLesion("liver siderotic focus 2 mL", "liver", (0.40, 0.60, 0.45), 2.0, 200.0, 1.0),
        FocalLesion("liver calcium-like focus 2 mL", "liver", (0.22, 0.60, 0.45), 2.0, 200.0, -1.0),
        FocalLesion("spleen dense focus 1 mL", "spleen", (0.74, 0.56, 0.45), 1.0, 150.0, 0.8),
    ],
    "transfusional": [
        FocalLesion("liver sparing 3 mL", "liver", (0.40, 0.60, 0.45), 3.0, 80.0),
    ],
}

# Background field of the phantom with phase (Hz, RAS mm): linear gradients plus a harmonic
# quadratic term, like the slowly varying field of a body in a scanner.
_BACKGROUND_FIELD = {"x": 0.25, "y": 0.15, "z": 0.4, "quadratic": 0.001, "phase0": 0.3}


def _focal_list(focal_lesions, preset):
    if focal_lesions is None:
        return []
    if isinstance(focal_lesions, str):
        if focal_lesions != "default":
            raise InputError(f"focal_lesions must be None, 'default' or a list of FocalLesion; "
                             f"got {focal_lesions!r}.")
        return list(FOCAL_LESIONS.get(preset, []))
    return list(focal_lesions)


def paint_focal_lesions(labels, r2, s0, focal_lesions, ijk_to_ras, truth, field_strength_t):
    """Paint foci into an R2* map (in place).

    Parameters
    ----------
    labels : uint8 ndarray, shape (k, j, i)
        Phantom regions.
    r2 : ndarray, shape (k, j, i)
        R2* in 1/s, changed in place.
    s0 : ndarray, shape (k, j, i)
        Unused (kept for the signature).
    focal_lesions : sequence of FocalLesion
    ijk_to_ras : ndarray, shape (4, 4)
        Voxel index to RAS mm.
    truth : dict of str to float
        Region R2* in 1/s (the focus's background).
    field_strength_t : float
        Field strength in T (3 T scaling from 2.5 T).

    Returns
    -------
    focal_map : uint8 ndarray, shape (k, j, i)
        n (1-based, in list order) where focus n lies.
    truth : list of dict
        Per focus: name, region, label_value, kind, r2star, background_r2star (1/s),
        nominal_volume_ml, n_voxels, volume_ml, centre_ras (mm), susceptibility_ppm,
        field_shift_sign.
    chi : float32 ndarray, shape (k, j, i)
        Susceptibility in ppm.

    Raises
    ------
    InputError
        For an unknown region, or a focus with no voxel inside its region.
    """
    names = {k_: v for v, k_ in LABELS.items()}
    spacing = np.linalg.norm(np.asarray(ijk_to_ras)[:3, :3], axis=0)   # i, j, k mm
    shape = labels.shape
    focal_map = np.zeros(shape, np.uint8)
    chi = np.zeros(shape, np.float32)
    out = []
    scale = 1.0
    for n, lesion in enumerate(focal_lesions, start=1):
        if lesion.region not in names:
            raise InputError(f"Focus {lesion.name!r}: unknown phantom region {lesion.region!r}; "
                             f"use one of {sorted(names)}.")
        if field_strength_t >= 2.5:
            scale = FIELD_SCALING_3T.get(lesion.region, FIELD_SCALING_3T_DEFAULT)
        centre = [int(np.clip(round(c * s - 0.5), 0, s - 1))
                  for c, s in zip(lesion.centre, shape[::-1])]            # i, j, k
        k, j, i = np.ogrid[:shape[0], :shape[1], :shape[2]]
        d2 = (((i - centre[0]) * spacing[0]) ** 2 + ((j - centre[1]) * spacing[1]) ** 2
              + ((k - centre[2]) * spacing[2]) ** 2)
        # The voxels nearest the centre, as many as make the volume: a voxelised sphere whose
        # volume is right to one voxel.
        voxel_ml = float(np.prod(spacing)) / 1000.0
        n_target = max(1, int(round(lesion.volume_ml / voxel_ml)))
        allowed = (labels == names[lesion.region]) & (focal_map == 0)
        d2 = np.where(allowed, d2, np.inf).ravel()
        nearest = np.argsort(d2, kind="stable")[:n_target]
        inside = np.zeros(shape, bool)
        inside.ravel()[nearest[np.isfinite(d2[nearest])]] = True
        if not inside.any():
            raise InputError(f"Focus {lesion.name!r} has no voxel inside the {lesion.region} on "
                             f"this grid; move it or enlarge it.")
        value = lesion.r2star * scale
        host = truth[lesion.region]
        r2[inside] = value
        focal_map[inside] = n
        chi[inside] = lesion.susceptibility_ppm
        ras = (np.asarray(ijk_to_ras)[:3, :3] @ np.array(centre, float)
               + np.asarray(ijk_to_ras)[:3, 3])
        out.append({"name": lesion.name, "region": lesion.region, "label_value": n,
                    "kind": "iron-sparing" if value < host else "iron-dense",
                    "r2star": float(value), "background_r2star": float(host),
                    "nominal_volume_ml": float(lesion.volume_ml),
                    "n_voxels": int(inside.sum()),
                    "volume_ml": float(inside.sum() * abs(np.linalg.det(np.asarray(ijk_to_ras)[:3, :3])) / 1000.0),
                    "centre_ras": ras.tolist(), "susceptibility_ppm": float(lesion.susceptibility_ppm),
                    "field_shift_sign": (None if lesion.susceptibility_ppm == 0 else
                                         "paramagnetic" if lesion.susceptibility_ppm > 0 else "diamagnetic")})
    _ = s0
    return focal_map, out, chi


def phantom_field_hz(chi_ppm, ijk_to_ras, field_strength_t):
    """Field offset of the phantom: background field plus the foci's dipole fields.

    Parameters
    ----------
    chi_ppm : ndarray, shape (k, j, i)
        Susceptibility in ppm.
    ijk_to_ras : ndarray, shape (4, 4)
        Voxel index to RAS mm.
    field_strength_t : float
        Field strength in T.

    Returns
    -------
    ndarray, shape (k, j, i)
        Offset in Hz.
    """
    from .focal_phase import GAMMA_BAR_MHZ_PER_T, b0_direction_kji, dipole_field

    m = np.asarray(ijk_to_ras, float)
    shape = chi_ppm.shape
    k, j, i = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    x, y, z = (m[r, 0] * i + m[r, 1] * j + m[r, 2] * k + m[r, 3] for r in range(3))
    b = _BACKGROUND_FIELD
    field = b["x"] * x + b["y"] * y + b["z"] * z + b["quadratic"] * (x * x + y * y - 2 * z * z)
    if np.any(chi_ppm):
        spacing_kji = np.linalg.norm(m[:3, :3], axis=0)[::-1]
        field += (GAMMA_BAR_MHZ_PER_T * field_strength_t
                  * dipole_field(chi_ppm, spacing_kji, b0_direction_kji(m), pad=16))
    return field


def make_focal_phantom(preset: str = "neonatal-haemochromatosis", focal_lesions="default",
                       with_phase: bool = True, shape=(16, 96, 128), echo_times_ms=None,
                       field_strength_t: float = 1.5, snr: float = 50.0, coils: int = 1,
                       seed: int | None = 0, voxel_size_mm=(3.0, 3.0, 6.0)) -> Phantom:
    """A phantom with focal lesions of known truth (and complex echoes when ``with_phase``).

    The organ labels are unchanged: the foci are to be found. ``make_phantom`` itself is
    unchanged.

    Parameters
    ----------
    preset : str
        As in `make_phantom`.
    focal_lesions : "default" or list of FocalLesion
        "default": ``FOCAL_LESIONS`` of the preset.
    with_phase : bool
        Also complex echoes (phase convention exp(+i 2 pi f t), B0 along RAS S), put in
        ``image.metadata["complex_components"]`` as "real" and "imaginary".
    shape, echo_times_ms, field_strength_t, snr, coils, seed, voxel_size_mm
        As in `make_phantom`.

    Returns
    -------
    Phantom
        ``focal_truth`` lists the foci (name, region, kind, R2*, painted volume, centre RAS,
        susceptibility and the expected field-shift sign), ``focal_map`` (uint8, shape
        (k, j, i)) where they lie, ``field_map_hz`` with phase.
    """
    base = make_phantom(preset, shape=shape, echo_times_ms=echo_times_ms,
                        field_strength_t=field_strength_t, snr=None, coils=coils, seed=seed,
                        voxel_size_mm=voxel_size_mm)
    r2 = base.r2star.copy()
    lesions = _focal_list(focal_lesions, preset)
    focal_map, truth, chi = paint_focal_lesions(base.labels, r2, base.s0, lesions,
                                                base.image.ijk_to_ras, base.region_r2star,
                                                field_strength_t)
    te = base.image.echo_times_ms
    amplitude = base.s0[None] * np.exp(-np.multiply.outer(te / 1000.0, r2))
    noiseless = snr is None or not np.isfinite(snr)
    sigma = 0.0 if noiseless else 1000.0 / float(snr)
    rng = np.random.default_rng(seed)
    metadata = dict(base.image.metadata, snr=None if noiseless else float(snr), noise_sigma=sigma,
                    focal_lesions=[t["name"] for t in truth])
    if with_phase:
        field = phantom_field_hz(chi, base.image.ijk_to_ras, field_strength_t)
        phase = (_BACKGROUND_FIELD["phase0"] + 2 * np.pi * np.multiply.outer(te / 1000.0, field))
        c = amplitude * np.exp(1j * phase)
        if not noiseless:
            c = c + sigma * (rng.standard_normal(c.shape) + 1j * rng.standard_normal(c.shape))
        magnitude = np.abs(c)
        if not noiseless and coils > 1:
            rest = sigma * sigma * rng.chisquare(2 * int(coils) - 2, c.shape)
            magnitude = np.sqrt(magnitude * magnitude + rest)
        unit = np.exp(1j * np.angle(c))
        metadata["complex_components"] = {"real": (magnitude * unit.real).astype(np.float32),
                                          "imaginary": (magnitude * unit.imag).astype(np.float32)}
        metadata["phase_convention"] = "exp(+i 2 pi f t) (PrecessionIsClockwise = 1); B0 along RAS S"
        signal = magnitude
    else:
        field = None
        signal = amplitude if noiseless else noncentral_chi(amplitude, sigma, int(coils), rng)
    image = MultiEchoImage(signal=signal.astype(np.float32), echo_times_ms=te,
                           ijk_to_ras=base.image.ijk_to_ras, quantity="T2*",
                           field_strength_t=float(field_strength_t), metadata=metadata)
    return Phantom(image=image, r2star=r2, s0=base.s0, fat_fraction=base.fat_fraction,
                   labels=base.labels, label_names=dict(LABELS), region_r2star=base.region_r2star,
                   noise_sigma=sigma, coils=int(coils), preset=preset, focal_truth=truth,
                   focal_map=focal_map, field_map_hz=field)
