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
    """A synthetic multi-echo study with its truth."""

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

    @property
    def region_t2star_ms(self) -> dict:
        return {k: 1000.0 / v for k, v in self.region_r2star.items()}


def default_echo_times_ms(field_strength_t: float) -> np.ndarray:
    """12 echoes, TE1 = dTE = 1.0 ms at 1.5 T; 16 echoes, TE1 = dTE = 0.6 ms at 3 T."""
    if field_strength_t >= 2.5:
        return 0.6 * np.arange(1, 17)
    return 1.0 * np.arange(1, 13)


def label_map(shape=(16, 96, 128)) -> np.ndarray:
    """Region labels (uint8 [k, j, i]) of the phantom geometry for a grid shape."""
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
    """Truth R2* (1/s) per region for a preset at a field strength."""
    if preset not in PRESETS:
        raise InputError(f"Unknown phantom preset {preset!r}; choose one of {sorted(PRESETS)}.")
    values = dict(PRESETS[preset]["r2star"])
    if field_strength_t >= 2.5:
        values = {k: v * FIELD_SCALING_3T.get(k, FIELD_SCALING_3T_DEFAULT) for k, v in values.items()}
    return values


def noncentral_chi(amplitude, sigma, coils, rng):
    """Root-sum-of-squares magnitude of `coils` channels with Gaussian noise sigma.

    The whole amplitude is put in one real channel; the other 2L-1 real channels hold noise,
    which gives exactly the noncentral chi distribution of RSS magnitude.
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
    preset : "normal", "neonatal-haemochromatosis" or "transfusional".
    shape : grid (k, j, i).
    echo_times_ms : echo times; default depends on the field strength (default_echo_times_ms).
    field_strength_t : 1.5 or 3 (R2* scaled for 3 T, fat frequencies follow B0).
    snr : S0 of liver (1000) over the noise SD per channel. None or inf gives noiseless data.
    coils : receive channels L of the root-sum-of-squares magnitude (noncentral chi, 2L dof).
    fat_fraction : None, a number (applied to liver and lesion) or {region: fraction}, 0..1.
    seed : random seed of the noise.
    voxel_size_mm : (i, j, k) spacing.
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
