"""The one analysis path: fit -> summarize -> warnings, shared by the Slicer logic, the command
line and batch.

    >>> from IronMapping.analysis import analyse
    >>> result = analyse(image, labels=labels, label_names={1: "liver", 2: "spleen"})
    >>> result.summary["regions"][0]["r2star_median"], result.warnings

Everything the user should read comes back in ``result.warnings``, once each, in order: the
input's notes, then the engine's and the summary's warnings. The engine's ``warnings.warn``
notes are captured here, so callers do not filter warnings themselves.
"""

from __future__ import annotations

import time
import warnings as _warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import RESEARCH_USE_STATEMENT, __version__
from .errors import InputError
from .image import MultiEchoImage

#: progress(stage, fraction): stage "fit" (fraction 0..1) or "statistics" (fraction None).
Progress = Callable[[str, "float | None"], None]

NO_LABELS_WARNING = "No label map was given: maps only, no organ statistics."


@dataclass
class AnalysisResult:
    """What :func:`analyse` produced.

    Attributes
    ----------
    fit : RelaxometryFit
        Maps of shape (k, j, i): r2star 1/s, t2star ms, s0, quality, status.
    summary : dict
        The statistics dict (:class:`IronMapping.quantification.Summary` shape) with
        ``field_strength_source``, ``echo_time_source`` and ``whole_image`` added.
    warnings : list of str
        Sentences for the user, in order, each once.
    provenance : dict
        JSON-able record: software, fit method (``fit.provenance()``), calibration, field
        strength (T) and echo times (ms) with where they came from.
    image : MultiEchoImage
        The image that was fitted.
    labels : int ndarray, shape (k, j, i)
        Regions the summary used (0 background).
    label_names : dict of int to str
        Label value to region name.
    timings : dict of str to float
        Seconds of the "fit" and "statistics" stages.
    """

    fit: Any
    summary: dict
    warnings: list[str]
    provenance: dict
    image: MultiEchoImage
    labels: np.ndarray
    label_names: dict[int, str]
    timings: dict[str, float] = field(default_factory=dict)


def analyse(echoes, echo_times_ms=None, labels=None, label_names: Mapping[int, str] | None = None,
            *, method: str = "auto", field_strength_t: float | None = None,
            quantity: str | None = None, ijk_to_ras=None, mask=None,
            mask_threshold: float | None = None, noise_sigma: float | None = None,
            coils: float | None = None, calibration=None, convert_field: bool = False,
            terminology: Mapping[int, str] | None = None,
            whole_image_region: str | None = None, field_strength_source: str | None = None,
            echo_time_source: str | None = None, no_labels_warning: str = NO_LABELS_WARNING,
            notes: Iterable[str] = (), progress: Progress | None = None,
            cancel: Callable[[], bool] | None = None) -> AnalysisResult:
    """Fit R2*/T2* maps and summarise them per region.

    Parameters
    ----------
    echoes : MultiEchoImage or ndarray, shape (n_echoes, k, j, i)
        An image, or magnitudes with ``echo_times_ms``.
    echo_times_ms : ndarray, shape (n_echoes,), optional
        Echo times in ms; only with an array (an image has its own).
    labels : int ndarray, shape (k, j, i), optional
        Regions on the image grid (0 background).
    label_names : dict of int to str, optional
        Label value to region name; the organ is recognised from the name.
    method : str
        One of ``relaxometry.METHODS`` ("auto" = the engine's default).
    field_strength_t : float, optional
        Field strength in T; with an array only (an image has its own), as are ``quantity``
        and ``ijk_to_ras``.
    quantity : str, optional
        "T2*" or "T2".
    ijk_to_ras : ndarray, shape (4, 4), optional
        Voxel index to RAS mm.
    mask : bool ndarray, shape (k, j, i), optional
        Voxels to fit.
    mask_threshold : float, optional
        Or fit only voxels whose first echo is above this (signal units; None/0: the engine's
        automatic mask).
    noise_sigma : float, optional
        Noise SD per coil channel (signal units), when known.
    coils : float, optional
        Receive coil count, when known.
    calibration, convert_field, terminology
        As ``quantification.summarize``.
    whole_image_region : str, optional
        Without labels, summarise every fitted voxel as one region of this name; None gives
        maps only and adds ``no_labels_warning`` to the summary's warnings.
    field_strength_source, echo_time_source : str, optional
        Where these came from, in words (default: the image's metadata).
    no_labels_warning : str
        Warning added when there are no regions.
    notes : iterable of str
        Warnings from reading the inputs (label resampling, overlaps, ...), put first after the
        image's own ``metadata["warnings"]``.
    progress : callable, optional
        See :data:`Progress`.
    cancel : callable, optional
        ``cancel() -> True`` raises FitCancelled.

    Returns
    -------
    AnalysisResult

    Raises
    ------
    IronMappingError
        Its subclasses (InputError, CalibrationError, FitCancelled, ...).
    """
    from . import relaxometry

    image = _as_image(echoes, echo_times_ms, field_strength_t, quantity, ijk_to_ras)
    say = progress or (lambda stage, fraction: None)
    if mask_threshold:
        mask = threshold_mask(image, mask_threshold)
    if labels is not None:
        labels = np.asarray(labels)
    inputs = [str(w) for w in image.metadata.get("warnings") or []] + [str(n) for n in notes]

    timings = {}
    fat_water = {}
    if method == "fat-water":
        from .fatwater import fit_inputs_from_image

        fat_water = fit_inputs_from_image(image)  # phase (complex echoes) and readout, if known
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        t0 = time.perf_counter()
        say("fit", 0.0)
        fit = relaxometry.fit(
            image.signal, image.echo_times_ms, method=method, mask=mask, noise_sigma=noise_sigma,
            coils=coils, progress=lambda f: say("fit", f), cancel=cancel, quantity=image.quantity,
            field_strength_t=image.field_strength_t,
            include_mask=None if labels is None else labels > 0, **fat_water)
        timings["fit"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        say("statistics", None)
        if labels is None and whole_image_region is not None:
            labels = (fit.status == relaxometry.Status.FITTED).astype(np.uint16)
            label_names = {1: whole_image_region}
        summary = summarize_fit(
            fit, image, labels, label_names, calibration=calibration,
            convert_field=convert_field, terminology=terminology,
            field_strength_source=field_strength_source, echo_time_source=echo_time_source,
            no_labels_warning=no_labels_warning)
        timings["statistics"] = time.perf_counter() - t0
    told = _user_warnings(caught)

    messages = unique(inputs + told + [str(w) for w in fit.warnings or []]
                      + list(summary.get("warnings") or []))
    if labels is None:
        labels, label_names = np.zeros(image.shape, dtype=np.int32), {}
    return AnalysisResult(fit=fit, summary=summary, warnings=messages,
                          provenance=_provenance(fit, image, summary), image=image,
                          labels=labels, label_names=dict(label_names or {}), timings=timings)


def summarize_fit(fit, image: MultiEchoImage, labels=None,
                  label_names: Mapping[int, str] | None = None, *, calibration=None,
                  convert_field: bool = False, terminology: Mapping[int, str] | None = None,
                  field_strength_source: str | None = None, echo_time_source: str | None = None,
                  no_labels_warning: str = NO_LABELS_WARNING) -> dict:
    """``quantification.summarize`` of a fit over an image's regions, plus provenance figures.

    Adds where the field strength and echo times came from and the whole-image figures
    (:func:`whole_image_figures`).

    Parameters
    ----------
    fit : RelaxometryFit
    image : MultiEchoImage
    labels : int ndarray, shape (k, j, i), optional
        None: no regions; ``no_labels_warning`` is added to the summary's warnings.
    label_names : dict of int to str, optional
    calibration, convert_field, terminology
        As ``quantification.summarize``.
    field_strength_source, echo_time_source : str, optional
        Where these came from, in words (default: the image's metadata).
    no_labels_warning : str

    Returns
    -------
    dict
        The summary.
    """
    from .quantification import summarize

    if labels is None:
        regions, names = np.zeros(image.shape, dtype=np.int32), {}
    else:
        regions, names = labels, dict(label_names or {})
    summary = dict(summarize(
        fit, regions, names, image.field_strength_t, calibration=calibration,
        signal=image.signal, echo_times_ms=image.echo_times_ms,
        voxel_volume_ml=image.voxel_volume_ml,
        terminology=dict(terminology) if terminology and any(terminology.values()) else None,
        convert_field=convert_field, ijk_to_ras=image.ijk_to_ras,
        complex_signal=image.metadata.get("complex_components")))
    summary["field_strength_source"] = (field_strength_source if field_strength_source is not None
                                        else image.metadata.get("field_strength_source"))
    summary["echo_time_source"] = (echo_time_source if echo_time_source is not None
                                   else image.metadata.get("echo_time_source"))
    summary["whole_image"] = whole_image_figures(fit)
    if labels is None:
        summary["warnings"] = list(summary.get("warnings") or []) + [no_labels_warning]
    return summary


def whole_image_figures(fit) -> dict:
    """How much of the image was fitted and the median R2*/T2* of the fitted tissue.

    Parameters
    ----------
    fit : RelaxometryFit

    Returns
    -------
    dict
        JSON-able: ``voxels``, ``fitted_voxels``, ``fitted_fraction`` (0-1), ``r2star_median``
        (1/s) and ``t2star_median`` (ms) over fitted voxels (None when none), ``quantity``
        ("T2*" or "T2").
    """
    from .relaxometry import Status

    fitted = np.asarray(fit.status) == Status.FITTED
    n_fitted = int(np.count_nonzero(fitted))
    r2 = np.asarray(fit.r2star)[fitted]
    t2 = np.asarray(fit.t2star)[fitted]
    r2 = r2[np.isfinite(r2)]
    t2 = t2[np.isfinite(t2)]
    return {"voxels": int(fitted.size), "fitted_voxels": n_fitted,
            "fitted_fraction": n_fitted / fitted.size if fitted.size else 0.0,
            "r2star_median": float(np.median(r2)) if r2.size else None,
            "t2star_median": float(np.median(t2)) if t2.size else None,
            "quantity": getattr(fit, "quantity", "T2*")}


def threshold_mask(image: MultiEchoImage, threshold: float) -> np.ndarray:
    """Voxels whose first echo is above a threshold.

    Parameters
    ----------
    image : MultiEchoImage
    threshold : float
        Signal units.

    Returns
    -------
    bool ndarray, shape (k, j, i)

    Raises
    ------
    InputError
        When the threshold leaves no voxel.
    """
    first = np.nan_to_num(image.signal[0])
    mask = first > float(threshold)
    if not mask.any():
        raise InputError(
            f"No voxel has a first-echo signal above the mask threshold {threshold:g}; "
            f"the first echo ranges up to {np.nanmax(image.signal[0]):g}. Lower the "
            "threshold or set it to 0 for the automatic mask.")
    return mask


def unique(items: Iterable[str]) -> list[str]:
    """Non-empty strings in first-seen order, each once.

    Parameters
    ----------
    items : iterable of str

    Returns
    -------
    list of str
    """
    return list(dict.fromkeys(str(i) for i in items if i))


def _as_image(echoes, echo_times_ms, field_strength_t, quantity, ijk_to_ras) -> MultiEchoImage:
    if isinstance(echoes, MultiEchoImage):
        given = {"echo_times_ms": echo_times_ms, "field_strength_t": field_strength_t,
                 "quantity": quantity, "ijk_to_ras": ijk_to_ras}
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise InputError(f"{', '.join(extra)} given with a MultiEchoImage, which has its own; "
                             "give a changed image instead (dataclasses.replace).")
        return echoes
    if echo_times_ms is None:
        raise InputError("echo_times_ms (ms, one per echo) is needed with an array of echoes.")
    return MultiEchoImage(echoes, echo_times_ms,
                          np.eye(4) if ijk_to_ras is None else ijk_to_ras,
                          quantity or "T2*", field_strength_t, {})


def _user_warnings(caught: Sequence[_warnings.WarningMessage]) -> list[str]:
    """The engine's notes (UserWarning) as text. numpy's RuntimeWarnings from masked-out
    arithmetic are dropped; anything else (deprecations) is issued again for developers."""
    told = []
    for w in caught:
        if issubclass(w.category, UserWarning):
            told.append(str(w.message))
        elif not issubclass(w.category, RuntimeWarning):
            _warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return told


def _provenance(fit, image: MultiEchoImage, summary: Mapping[str, Any]) -> dict:
    return {"software": f"IronMapping {__version__}", "research_use": RESEARCH_USE_STATEMENT,
            "method": fit.provenance() if hasattr(fit, "provenance") else {},
            "calibration": summary.get("calibration"),
            "quantity": image.quantity,
            "field_strength_t": image.field_strength_t,
            "field_strength_source": summary.get("field_strength_source"),
            "echo_times_ms": [float(t) for t in image.echo_times_ms],
            "echo_time_source": summary.get("echo_time_source")}
