"""Checks every multi-echo input goes through, whatever it was read from.

``validate_echoes`` is shared by the file readers of this package and by the MRML bridge
(``IronMapping.scene``), so that a sequence node in Slicer and a DICOM folder on disk are
refused or accepted for the same reasons, with the same messages.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import EchoTimeError, GeometryError, InputError
from ..image import MultiEchoImage

#: Echo times closer than this (ms) are treated as the same echo.
ECHO_TIME_TOLERANCE_MS = 1e-3
#: Largest difference (mm, per IJK-to-RAS matrix element) still counted as the same voxel grid.
GEOMETRY_TOLERANCE_MM = 1e-3
#: A last echo time below this (ms) means the values are seconds: no multi-echo protocol ends
#: its echo train within half a millisecond.
SECONDS_IF_LAST_BELOW_MS = 0.5
#: A first echo time at or above this (ms) means the values are microseconds (Siemens headers
#: store alTE in us): multi-echo GRE and spin-echo trains start within a few tens of ms.
MICROSECONDS_IF_FIRST_FROM_MS = 150.0


class EchoOrderWarning(UserWarning):
    """The echoes were given out of echo-time order and have been sorted."""


@dataclass
class EchoStack:
    """Echoes that passed :func:`validate_echoes`, sorted by echo time.

    Attributes
    ----------
    signal : float32 array, shape (n_echoes, k, j, i)
    echo_times_ms : float64 array, shape (n_echoes,), strictly increasing
    ijk_to_ras : float64 array, shape (4, 4)
    order : int array, shape (n_echoes,)
        ``order[n]`` is the position in the input of the n-th sorted echo.
    names : list of str
        Echo names in sorted order.
    warnings : list of str
        Messages about what was changed (e.g. sorting); empty when nothing was.
    """

    signal: np.ndarray
    echo_times_ms: np.ndarray
    ijk_to_ras: np.ndarray
    order: np.ndarray
    names: list[str]
    warnings: list[str] = field(default_factory=list)


def _echo_name(names, n, te=None):
    base = names[n] if names is not None else f"echo {n + 1}"
    if te is not None and np.isfinite(te):
        return f"{base} (TE {te:g} ms)"
    return base


def _as_matrices(ijk_to_ras, n_echoes):
    if ijk_to_ras is None:
        return [np.eye(4)] * n_echoes
    arr = np.asarray(ijk_to_ras, dtype=np.float64)
    if arr.shape == (4, 4):
        return [arr] * n_echoes
    if arr.shape == (n_echoes, 4, 4):
        return list(arr)
    raise GeometryError(
        f"ijk_to_ras must be one 4x4 matrix or one per echo ({n_echoes}x4x4); got shape "
        f"{arr.shape}.")


def _list_ms(values, limit=6) -> str:
    shown = ", ".join(f"{t:g}" for t in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def check_echo_times(echo_times_ms, n_echoes: int | None = None, names=None,
                     require_increasing: bool = False,
                     how_to_give: str = "echo_times_ms=[...] in Python or --te-ms on the "
                                        "command line") -> np.ndarray:
    """The one echo-time check every input goes through (files, Slicer nodes, ``fit``).

    Checks, in this order: count, finite, units (seconds or microseconds given as ms),
    negative values, duplicates (closer than :data:`ECHO_TIME_TOLERANCE_MS`), and with
    ``require_increasing`` the order. Units come before duplicates because seconds with
    1 ms spacing look like duplicate milliseconds.

    Parameters
    ----------
    echo_times_ms : sequence of float, shape (n_echoes,)
        Echo times in ms, in input order.
    n_echoes : int, optional
        Number of echoes in the data (checked against the number of echo times).
    names : sequence of str, optional
        Echo names (files, nodes) for the messages.
    require_increasing : bool
        Refuse echo times that are not strictly increasing (``fit`` needs sorted echoes;
        the readers sort them instead).
    how_to_give : str
        How the user can type echo times in, for the messages.

    Returns
    -------
    float64 array, shape (n_echoes,), in input order.

    Raises
    ------
    EchoTimeError
        With what is wrong and what to do.
    """
    if echo_times_ms is None:
        raise EchoTimeError(
            "No echo times were given. Give one echo time in milliseconds per echo "
            f"({how_to_give}); they are in the DICOM tag EchoTime (0018,0081) or the dcm2niix "
            "JSON sidecar.")
    try:
        te = np.asarray(echo_times_ms, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise EchoTimeError(f"Echo times must be numbers in ms; got {echo_times_ms!r}.") from None
    if n_echoes is not None and te.size != n_echoes:
        raise EchoTimeError(
            f"The signal has {n_echoes} echoes but {te.size} echo times were given. "
            "Give exactly one echo time (ms) per echo, in the order of the echo axis (axis 0).")
    if te.size < 2:
        raise EchoTimeError(
            f"R2*/T2* needs at least two echoes; got {te.size}. Load the whole multi-echo series.")
    if not np.all(np.isfinite(te)):
        raise EchoTimeError(f"Echo times must be finite numbers; got {_list_ms(te.tolist())} ms.")
    if te.max() > 0 and te.max() < SECONDS_IF_LAST_BELOW_MS:
        raise EchoTimeError(
            f"Echo times {_list_ms(te.tolist())} look like seconds, not milliseconds (the last "
            f"echo would be at {te.max():g} ms). Multiply them by 1000 (0.0012 s = 1.2 ms) and "
            f"give them in ms ({how_to_give}).")
    if te.min() >= MICROSECONDS_IF_FIRST_FROM_MS:
        raise EchoTimeError(
            f"Echo times {_list_ms(te.tolist())} look like microseconds, not milliseconds (the "
            f"first echo would be at {te.min():g} ms; multi-echo series start within a few ms, "
            "and Siemens headers store echo times in microseconds). Divide them by 1000 "
            f"(1200 us = 1.2 ms) and give them in ms ({how_to_give}).")
    if np.any(te < 0):
        k = int(np.flatnonzero(te < 0)[0])
        raise EchoTimeError(
            f"{_echo_name(names, k)} has a negative echo time ({te[k]:g} ms). Echo times "
            "must be positive milliseconds; check the values typed in or the file header.")
    order = np.argsort(te, kind="stable")
    dup = np.flatnonzero(np.diff(te[order]) < ECHO_TIME_TOLERANCE_MS)
    if dup.size:
        a, b = order[dup[0]], order[dup[0] + 1]
        raise EchoTimeError(
            f"Duplicate echo times: {_echo_name(names, a)} and {_echo_name(names, b)} have the "
            f"same echo time ({te[a]:g} ms). Each echo needs its own echo time: remove the duplicate "
            "(e.g. a repeated acquisition, a series loaded twice or a phase image) or correct "
            "the echo times.")
    if require_increasing and np.any(np.diff(te) < 0):
        raise EchoTimeError(
            f"Echo times are not in increasing order: {_list_ms(te.tolist(), 12)} ms. Sort the "
            "echoes and their echo times together (e.g. order = np.argsort(te); signal[order], "
            "te[order]).")
    return te


def validate_echoes(volumes, echo_times_ms, ijk_to_ras=None, names=None,
                    looked_in: Sequence[str] | str | None = None,
                    check_values: bool = True, warn: bool = True) -> EchoStack:
    """Check echoes and echo times, sort them by echo time and stack them.

    Parameters
    ----------
    volumes : sequence of arrays (k, j, i), or one array (n_echoes, k, j, i)
        Magnitude images, one per echo, in any order.
    echo_times_ms : sequence of float or None
        One echo time per volume in milliseconds; None or NaN where unknown.
    ijk_to_ras : (4, 4) array, (n_echoes, 4, 4) array, sequence of (4, 4) or None
        Geometry of each echo (one shared matrix, one per echo, or None: not checked).
    names : sequence of str, optional
        What to call each echo in messages (e.g. a file or node name).
    looked_in : str or sequence of str, optional
        Where the echo times were looked for; named in the message when some are missing.
    check_values : bool
        Refuse non-finite or negative magnitude values.
    warn : bool
        Also issue a Python warning (:class:`EchoOrderWarning`) when echoes are re-sorted.

    Returns
    -------
    EchoStack

    Raises
    ------
    EchoTimeError
        Fewer than 2 echoes, missing or duplicate echo times, or a count mismatch.
    GeometryError
        Echoes on different voxel grids (names the first echo that differs).
    InputError
        Non-finite or negative magnitude values.
    """
    if isinstance(volumes, np.ndarray) and volumes.ndim == 4:
        vols = list(volumes)
    else:
        vols = [np.asarray(v) for v in volumes]
    n = len(vols)
    if names is not None:
        names = [str(x) for x in names]
        if len(names) != n:
            raise InputError(f"{len(names)} names were given for {n} echoes.")
    if n < 2:
        raise EchoTimeError(
            f"Only {n} echo found; an R2*/T2* fit needs at least 2 echoes (ideally 6 or "
            "more). Load the whole multi-echo series, not a single echo.")

    if echo_times_ms is None:
        echo_times_ms = [None] * n
    tes_in = list(np.ravel(np.asarray(echo_times_ms, dtype=object))) \
        if not isinstance(echo_times_ms, (list, tuple)) else list(echo_times_ms)
    if len(tes_in) != n:
        raise EchoTimeError(
            f"{n} echoes but {len(tes_in)} echo times were given. Give exactly one echo "
            "time (ms) per echo, in the same order as the echoes.")
    tes = np.array([np.nan if t is None else float(t) for t in tes_in], dtype=np.float64)
    missing = [k for k in range(n) if not np.isfinite(tes[k])]
    if missing:
        where = [looked_in] if isinstance(looked_in, str) else list(looked_in or [])
        which = ", ".join(_echo_name(names, k) for k in missing[:6])
        if len(missing) > 6:
            which += f" and {len(missing) - 6} more"
        place = ("; looked in: " + "; ".join(where)) if where else ""
        raise EchoTimeError(
            f"No echo time known for {which}{place}. Type in the echo times in ms, one per "
            "echo in input order (e.g. echo_times_ms=[1.2, 2.4, ...] in Python or "
            "--te-ms 1.2 2.4 ... on the command line).")
    tes = check_echo_times(tes, names=names)

    # geometry: the same grid for every echo
    shape0 = vols[0].shape
    if len(shape0) != 3:
        raise InputError(
            f"{_echo_name(names, 0, tes[0])} is not a 3-D volume (array shape {shape0}); "
            "each echo must be one volume [k, j, i].")
    mats = _as_matrices(ijk_to_ras, n)
    for k in range(1, n):
        if vols[k].shape != shape0:
            raise GeometryError(
                f"{_echo_name(names, k, tes[k])} has {vols[k].shape} voxels (k, j, i) but "
                f"{_echo_name(names, 0, tes[0])} has {shape0}. All echoes must share one "
                "voxel grid: load echoes of the same acquisition, or resample first.")
        diff = np.abs(mats[k] - mats[0]).max()
        if diff > GEOMETRY_TOLERANCE_MM:
            raise GeometryError(
                f"{_echo_name(names, k, tes[k])} lies on a different voxel grid from "
                f"{_echo_name(names, 0, tes[0])} (IJK-to-RAS differs by up to {diff:.3g} mm). "
                "All echoes must come from one acquisition with identical position, "
                "orientation and spacing; resample it onto the others or leave it out.")

    order = np.argsort(tes, kind="stable")
    sorted_tes = tes[order]

    notes = []
    if np.any(order != np.arange(n)):
        msg = ("Echoes were not in echo-time order (given: "
               + ", ".join(f"{t:g}" for t in tes) + " ms); they have been sorted to "
               + ", ".join(f"{t:g}" for t in sorted_tes) + " ms together with their images.")
        notes.append(msg)
        if warn:
            warnings.warn(msg, EchoOrderWarning, stacklevel=2)

    signal = np.empty((n,) + shape0, dtype=np.float32)
    for dst, src in enumerate(order):
        signal[dst] = vols[src]
    sorted_names = [_echo_name(names, int(s)) for s in order]
    if check_values:
        check_magnitude(signal, sorted_tes, sorted_names)
    return EchoStack(signal=signal, echo_times_ms=sorted_tes, ijk_to_ras=mats[0].copy(),
                     order=order, names=sorted_names, warnings=notes)


def check_magnitude(signal, echo_times_ms=None, names=None):
    """Refuse non-finite or negative magnitude values, naming the first echo that has them.

    Parameters
    ----------
    signal : ndarray, (n_echoes, ...)
        Magnitude images.
    echo_times_ms : ndarray, (n_echoes,), optional
        Echo times in ms, for the message.
    names : list of str, optional
        Echo names, for the message.

    Raises
    ------
    InputError
        An echo has a NaN, infinite or negative value.
    """
    for k in range(signal.shape[0]):
        echo = signal[k]
        bad = ~np.isfinite(echo)
        te = None if echo_times_ms is None else echo_times_ms[k]
        label = names[k] if names is not None else _echo_name(None, k, te)
        if bad.any():
            raise InputError(
                f"{label} has {int(bad.sum())} non-finite voxel values (NaN or infinity). "
                "Magnitude images must be finite: replace them with 0 (e.g. outside a "
                "mask) before fitting, or load the original scanner images.")
        mn = float(echo.min()) if echo.size else 0.0
        if mn < 0:
            raise InputError(
                f"{label} has negative values (minimum {mn:g}, {int((echo < 0).sum())} "
                "voxels); magnitude images are never negative. This looks like a phase, "
                "real or imaginary image or a wrong rescale: load the magnitude images.")


def stack_echoes(volumes, echo_times_ms, ijk_to_ras, quantity="T2*", field_strength_t=None,
                 metadata: dict[str, Any] | None = None, names=None, looked_in=None,
                 warn: bool = True) -> MultiEchoImage:
    """Validate echoes (see :func:`validate_echoes`) and return a :class:`MultiEchoImage`.

    Warnings about what was changed are appended to ``metadata["warnings"]``. Extra arrays
    in ``metadata["complex_components"]`` ([echo, k, j, i] each, input order) are re-sorted
    with the echoes.

    Parameters
    ----------
    volumes : sequence of arrays (k, j, i), or one array (n_echoes, k, j, i)
        Magnitude images, one per echo, in any order.
    echo_times_ms : sequence of float or None
        One echo time per volume in ms; None or NaN where unknown.
    ijk_to_ras : (4, 4) array, (n_echoes, 4, 4) array, sequence of (4, 4) or None
        Geometry of each echo (one shared matrix, one per echo, or None: not checked).
    quantity : str
        "T2*" (gradient echo) or "T2" (spin echo).
    field_strength_t : float, optional
        Main field in T.
    metadata : dict, optional
        Metadata of the image (copied, not changed); gets ``warnings`` and ``echo_names``.
    names : sequence of str, optional
        What to call each echo in messages (e.g. a file or node name).
    looked_in : str or sequence of str, optional
        Where the echo times were looked for; named in the message when some are missing.
    warn : bool
        Also issue a Python warning (:class:`EchoOrderWarning`) when echoes are re-sorted.

    Returns
    -------
    MultiEchoImage
        Echoes sorted by echo time: signal (n_echoes, k, j, i), echo times in ms.

    Raises
    ------
    EchoTimeError, GeometryError, InputError
        As :func:`validate_echoes`.
    """
    stack = validate_echoes(volumes, echo_times_ms, ijk_to_ras, names=names,
                            looked_in=looked_in, warn=warn)
    meta = dict(metadata or {})
    meta["warnings"] = list(meta.get("warnings", [])) + stack.warnings
    meta["echo_names"] = stack.names
    comps = meta.get("complex_components")
    if comps:
        meta["complex_components"] = {k: np.asarray(v)[stack.order] for k, v in comps.items()}
    return MultiEchoImage(signal=stack.signal, echo_times_ms=stack.echo_times_ms,
                          ijk_to_ras=stack.ijk_to_ras, quantity=quantity,
                          field_strength_t=field_strength_t, metadata=meta)


def reconcile_echo_times(found, given, where: str):
    """Choose between echo times read from the data (``found``) and typed in (``given``).

    Raises EchoTimeError when both exist and disagree, rather than silently picking one.

    Parameters
    ----------
    found : sequence of float or None, optional
        Echo times in ms read from the data, one per echo (None where a file had none).
    given : sequence of float, optional
        Echo times in ms typed in by the caller.
    where : str
        Where ``found`` was read (the source name when it is used).

    Returns
    -------
    echo_times : list of float (may contain None), or None
        The echo times to use, in ms, input order: ``found`` when nothing was given or both
        agree (within 0.01 ms, in any order), else ``given``.
    source : str
        ``where``, or "given by the caller".

    Raises
    ------
    EchoTimeError
        ``given`` has a different count from ``found``, or both are complete and disagree.
    """
    found_list = None if found is None else [None if t is None else float(t) for t in found]
    have_found = found_list is not None and all(t is not None and np.isfinite(t)
                                                for t in found_list)
    if given is None:
        return found_list, where
    given_arr = np.asarray(given, dtype=np.float64).ravel()
    if found_list is not None and len(given_arr) != len(found_list):
        raise EchoTimeError(
            f"{len(given_arr)} echo times were given but {len(found_list)} echoes were found. "
            "Give exactly one echo time (ms) per echo.")
    if have_found:
        f = np.asarray(found_list)
        if np.allclose(np.sort(f), np.sort(given_arr), atol=0.01):
            return found_list, where
        raise EchoTimeError(
            "The echo times given (" + ", ".join(f"{t:g}" for t in given_arr) + " ms) differ "
            f"from those recorded in {where} (" + ", ".join(f"{t:g}" for t in f) + " ms). "
            "Leave echo_times_ms out to use the recorded ones, or fix the files.")
    return [float(t) for t in given_arr], "given by the caller"


def field_strength_from(value, notes: list[str] | None = None):
    """Field strength in tesla from a header value (None if absent/zero; gauss converted).

    Parameters
    ----------
    value : object
        Header value (number or text).
    notes : list of str, optional
        Notes for the user; a note is appended when a value above 20 is read as gauss.

    Returns
    -------
    float or None
        Field strength in T; None when the value is missing, not a number, zero or negative.
    """
    try:
        b0 = float(value)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(b0) or b0 <= 0:
        return None
    if b0 > 20:  # some older headers store gauss (e.g. 15000 for 1.5 T)
        if notes is not None:
            notes.append(f"Field strength {b0:g} read as gauss and converted to {b0 / 1e4:g} T.")
        b0 = b0 / 1e4
    return b0


def quantity_from_sequence(scanning_sequence=None, echo_pulse_sequence=None) -> str:
    """'T2' for a spin-echo series, else 'T2*'.

    Parameters
    ----------
    scanning_sequence : str or sequence of str, optional
        DICOM (0018,0020) ScanningSequence (e.g. "SE", ["GR", "EP"]); spin echo when it has SE
        and not GR.
    echo_pulse_sequence : str, optional
        Enhanced-MR (0018,9008) EchoPulseSequence ("SPIN", "GRADIENT", "BOTH"); when given it
        decides (spin echo for "SPIN" only).

    Returns
    -------
    str
        "T2" or "T2*".
    """
    if echo_pulse_sequence:
        return "T2" if str(echo_pulse_sequence).strip().upper() == "SPIN" else "T2*"
    if scanning_sequence is None:
        return "T2*"
    if isinstance(scanning_sequence, str):
        tokens = scanning_sequence.replace("\\", " ").replace("_", " ").split()
    else:
        tokens = [str(t) for t in scanning_sequence]
    tokens = {t.strip().upper() for t in tokens}
    return "T2" if "SE" in tokens and "GR" not in tokens else "T2*"
