"""Multi-peak fat spectrum and the fat signal phasor c(t).

The fat spectrum is data (peaks in ppm relative to water, relative amplitudes) with its
source, so that a correction is a one-line change and outputs can name what was used.

Signal model of a voxel with water W and fat F (both real, non-negative) at echo time t::

    S(t) = (W + F c(t)) exp(-R2* t) exp(i 2 pi psi t),   c(t) = sum_p a_p exp(+/- i 2 pi f_p t)

with f_p = 42.577 MHz/T * B0 * delta_p * 1e-6 (about -217 Hz for the -3.4 ppm peak at 1.5 T).
The sign of the exponent depends on the scanner's precession convention (see ``fat_phasor``);
the magnitude |W + F c(t)| does not depend on it.
"""

from dataclasses import dataclass

import numpy as np

from .errors import EchoTimeError, InputError

GYROMAGNETIC_RATIO_MHZ_PER_T = 42.577
"""Proton gyromagnetic ratio / 2 pi, MHz/T (CODATA 42.577478...)."""


@dataclass(frozen=True)
class FatSpectrum:
    """A multi-peak fat spectrum.

    Attributes
    ----------
    name : str
    shifts_ppm : tuple of float
        Chemical shift of each peak relative to water, ppm (negative = below water).
    amplitudes : tuple of float
        Relative amplitude of each peak; normalised to sum 1 by ``relative_amplitudes``.
    source : str
        Where the numbers come from.
    """

    name: str
    shifts_ppm: tuple
    amplitudes: tuple
    source: str

    @property
    def relative_amplitudes(self):
        """Amplitudes normalised to sum 1 (so F is the total fat signal at t = 0), shape [P]."""
        a = np.asarray(self.amplitudes, dtype=float)
        return a / a.sum()

    def frequencies_hz(self, field_strength_t):
        """Peak frequencies relative to water, Hz, shape [P], for a field strength in tesla.

        Parameters
        ----------
        field_strength_t : float
            Main field in T (finite, positive).

        Returns
        -------
        ndarray of float, shape [P]
            f_p = 42.577 MHz/T * B0 * shift_p (ppm), in Hz.

        Raises
        ------
        InputError
            The field strength is not a finite positive number.
        """
        b0 = _check_field(field_strength_t)
        return GYROMAGNETIC_RATIO_MHZ_PER_T * b0 * np.asarray(self.shifts_ppm, dtype=float)

    def describe(self):
        """One line naming the spectrum, its peaks and source (for provenance and reports)."""
        peaks = ", ".join(f"{s:+.2f} ppm x {a:.3f}"
                          for s, a in zip(self.shifts_ppm, self.amplitudes))
        return f"{self.name}: {peaks} (source: {self.source})"


SIX_PEAK_LIVER = FatSpectrum(
    name="six-peak fat spectrum",
    shifts_ppm=(-3.80, -3.40, -2.60, -1.94, -0.39, 0.60),
    amplitudes=(0.087, 0.693, 0.128, 0.004, 0.039, 0.048),
    source=("ISMRM 2012 fat-water separation challenge / ISMRM Fat-Water Toolbox "
            "(Hu HH et al., MRM 2012;68:378-388); liver fat spectrum as in Hamilton G et al., "
            "NMR Biomed 2011;24:784-790"),
)

FAT_SPECTRA = {"six-peak": SIX_PEAK_LIVER}
DEFAULT_FAT_SPECTRUM = "six-peak"


def _check_field(field_strength_t):
    try:
        b0 = float(field_strength_t)
    except (TypeError, ValueError):
        b0 = float("nan")
    if not np.isfinite(b0) or b0 <= 0:
        raise InputError(
            f"Field strength {field_strength_t!r} T is not usable for the fat model; give the "
            "scanner's main field in tesla (e.g. 1.5 or 3.0).")
    return b0


def get_spectrum(spectrum=None):
    """Return a ``FatSpectrum`` from a name in ``FAT_SPECTRA``, a ``FatSpectrum`` or None (default).

    Parameters
    ----------
    spectrum : str or FatSpectrum, optional
        A key of ``FAT_SPECTRA`` ("six-peak"), a spectrum (returned as is), or None for
        ``DEFAULT_FAT_SPECTRUM``.

    Returns
    -------
    FatSpectrum

    Raises
    ------
    InputError
        Unknown spectrum name.
    """
    if spectrum is None:
        spectrum = DEFAULT_FAT_SPECTRUM
    if isinstance(spectrum, FatSpectrum):
        return spectrum
    try:
        return FAT_SPECTRA[spectrum]
    except (KeyError, TypeError):
        raise InputError(f"Unknown fat spectrum {spectrum!r}; use one of "
                         f"{sorted(FAT_SPECTRA)} or pass a FatSpectrum.") from None


def fat_phasor(echo_times_ms, field_strength_t, precession_clockwise=True, spectrum=None):
    """Complex fat signal c(t) = sum_p a_p exp(i s 2 pi f_p t) at each echo time.

    Parameters
    ----------
    echo_times_ms : array_like, shape [E]
        Echo times in ms.
    field_strength_t : float
        Main field in tesla.
    precession_clockwise : bool
        Scanner convention as in the ISMRM Fat-Water Toolbox's ``PrecessionIsClockwise``:
        True (1) means the data follow exp(+i 2 pi f t) with the main fat peak at negative f
        (s = +1); False means the phase runs the other way (s = -1, the complex conjugate).
        Irrelevant for magnitude fitting.
    spectrum : str or FatSpectrum, optional
        Default: the six-peak spectrum ``SIX_PEAK_LIVER``; amplitudes normalised to sum 1.

    Returns
    -------
    ndarray of complex128, shape [E]; c(0) = 1.
    """
    spec = get_spectrum(spectrum)
    t_s = np.asarray(echo_times_ms, dtype=float) * 1e-3
    if t_s.ndim != 1 or not np.all(np.isfinite(t_s)):
        raise EchoTimeError("Echo times must be a 1-D list of finite numbers in ms.")
    sign = 1.0 if precession_clockwise else -1.0
    f = spec.frequencies_hz(field_strength_t)
    return np.exp(sign * 2j * np.pi * t_s[:, None] * f[None, :]) @ spec.relative_amplitudes
