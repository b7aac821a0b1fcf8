"""IronMappingLogic: the one object the Slicer panel and the Python console both use.

    >>> from IronMapping.logic import IronMappingLogic
    >>> result = IronMappingLogic().process(sequenceNode, segmentationNode=segNode)
    >>> result["r2star"], result["table"], result["plot"]      # MRML nodes
    >>> result.summary["pattern"]["text"]

Works inside Slicer and in plain Python with the ``slicer-core`` wheel (no Qt needed). All MRML
access goes through :mod:`IronMapping.scene`; the numbers come from :func:`IronMapping.analysis.analyse`
(the same path as the command line and batch).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import RESEARCH_USE_STATEMENT, __version__
from . import scene as mrml
from .errors import InputError

try:  # inside Slicer: behave like every scripted module logic (parameter node helpers)
    from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic as _LogicBase
except ImportError:  # plain Python with slicer-core, or no Slicer at all
    _LogicBase = object

log = logging.getLogger(__name__)

WHOLE_IMAGE_REGION = "all fitted voxels"


@dataclass
class IronMappingResult(Mapping):
    """Output nodes by key plus what produced them.

    A mapping key -> node: "r2star", "t2star", "s0", "quality", "status", "table", "plot", and
    "pdff" for fat-water fits.

    Attributes
    ----------
    nodes : dict of str to vtkMRMLNode
    fit : RelaxometryFit
    image : MultiEchoImage
    summary : dict
        The statistics dict (``quantification.Summary``).
    warnings : list of str
        Sentences worth showing (the analysis' warnings, then the summary's notes), each once.
    seconds : float
        Run time in s.
    """

    nodes: dict
    fit: Any = None
    image: Any = None
    summary: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    seconds: float = 0.0

    def __getitem__(self, key):
        return self.nodes[key]

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self):
        return len(self.nodes)

    @property
    def pattern_text(self) -> str:
        """The iron distribution pattern in words ("" without one)."""
        pattern = (self.summary or {}).get("pattern") or {}
        return pattern.get("text", "") if isinstance(pattern, dict) else str(pattern)


class IronMappingLogic(_LogicBase):
    """Maps, statistics, table and plot in the scene from a multi-echo input.

    Usable without a GUI; the module's panel calls :meth:`process` with the panel's values.
    """

    def __init__(self, parent=None):
        if _LogicBase is not object:
            _LogicBase.__init__(self, parent)

    # ------------------------------------------------------------------ helpers for the panel

    @staticmethod
    def inspectInput(inputNode, scene=None) -> dict:
        """What the metadata of an input say (no voxels read).

        Parameters
        ----------
        inputNode : vtkMRMLNode or list of vtkMRMLScalarVolumeNode
            As in :meth:`process`.
        scene : vtkMRMLScene, optional
            Default: Slicer's scene.

        Returns
        -------
        dict
            echoTimesMs (list of float, ms), echoTimeSource, fieldStrengthT (T), numberOfEchoes,
            quantity, kind, displayNode; values are None when unknown.
        """
        desc = mrml.describe_input(inputNode, scene)
        te = desc.echo_times_ms
        return {"echoTimesMs": None if te is None else [float(t) for t in te],
                "echoTimeSource": desc.echo_time_source, "fieldStrengthT": desc.field_strength_t,
                "numberOfEchoes": desc.n_echoes, "quantity": desc.quantity, "kind": desc.kind,
                "displayNode": desc.display}

    @staticmethod
    def methods() -> tuple:
        """The fit method names of ``relaxometry.METHODS``."""
        from .relaxometry import METHODS

        return METHODS

    @staticmethod
    def calibrations() -> dict:
        """{name: label} of the LIC calibrations, default first."""
        from .calibration import CALIBRATIONS, DEFAULT_CALIBRATION

        names = [DEFAULT_CALIBRATION] + [n for n in CALIBRATIONS if n != DEFAULT_CALIBRATION]
        return {n: CALIBRATIONS[n].label for n in names}

    # ------------------------------------------------------------------ the computation

    def process(self, inputNode, echoTimesMs=None, segmentationNode=None, method: str = "auto",
                fieldStrengthT: float | None = None, calibration=None, segmentIds=None,
                maskThreshold: float | None = None, noiseSigma: float | None = None,
                coils: float | None = None, convertField: bool = False,
                progress: Callable[[float], None] | None = None,
                cancel: Callable[[], bool] | None = None, reuseOutputs: bool = True,
                scene=None) -> IronMappingResult:
        """Fit R2*/T2* maps of an input and summarise them per segment in the scene.

        Parameters
        ----------
        inputNode : vtkMRMLNode or list of vtkMRMLScalarVolumeNode
            Volume sequence, MultiVolume, proxy volume of a sequence, or a list of scalar volumes
            (one per echo).
        echoTimesMs : sequence of float, optional
            Echo times in ms; None reads them from the metadata (MultiVolume FrameLabels or DICOM
            EchoTime).
        segmentationNode : vtkMRMLSegmentationNode, optional
            Regions; without a segmentation the table summarises all fitted voxels.
        method : str
            One of :meth:`methods` ("auto" = the engine's default).
        fieldStrengthT : float, optional
            Field strength in T; None takes DICOM MagneticFieldStrength when available.
        calibration : str, optional
            LIC calibration name (see :meth:`calibrations`), None = default.
        segmentIds : sequence of str, optional
            Segments used (all segments when None).
        maskThreshold : float, optional
            First-echo signal (signal units) below which voxels are not fitted; None/0 = automatic.
        noiseSigma : float, optional
            Noise SD per coil channel (signal units), when known.
        coils : float, optional
            Receive coil count, when known.
        convertField : bool
            Allow a 1.5 T LIC calibration on 3 T data through a published conversion (flagged in
            the output); otherwise such a request is refused.
        progress : callable, optional
            ``progress(fraction)``, fraction 0..1, for a progress dialog.
        cancel : callable, optional
            ``cancel() -> bool``; cancelling raises FitCancelled and leaves the scene unchanged.
        reuseOutputs : bool
            Update the outputs of a previous run (default) instead of adding new ones.
        scene : vtkMRMLScene, optional
            Default: Slicer's scene.

        Returns
        -------
        IronMappingResult

        Raises
        ------
        IronMappingError
            A subclass for bad input; the scene is left as it was.
        """
        from .analysis import analyse, unique

        started = time.perf_counter()
        check_segmentation_node(segmentationNode)
        scene = mrml.mrml_scene(scene)
        with mrml.SceneTransaction(scene):
            image, desc = mrml.read_multiecho(inputNode, echoTimesMs, fieldStrengthT, scene)
            notes: list[str] = []
            recorded = desc.field_strength_t
            if fieldStrengthT and recorded and abs(float(fieldStrengthT) - recorded) > 0.1:
                notes.append(f"Field strength {float(fieldStrengthT):g} T given replaces the "
                             f"{recorded:g} T of the DICOM metadata: grades and LIC use "
                             f"{float(fieldStrengthT):g} T.")
            regions = None
            if segmentationNode is not None:
                regions = mrml.region_labels(segmentationNode, segmentIds, image, scene, desc.primary)
                notes.extend(regions.overlaps)
            analysis = analyse(
                image, labels=None if regions is None else regions.labels,
                label_names=None if regions is None else dict(regions.label_names),
                method=method, mask_threshold=maskThreshold, noise_sigma=noiseSigma, coils=coils,
                calibration=calibration, convert_field=convertField,
                terminology=None if regions is None else dict(regions.terminology),
                whole_image_region=WHOLE_IMAGE_REGION,
                field_strength_source=field_strength_source(fieldStrengthT, image, recorded),
                notes=notes, cancel=cancel,
                progress=None if progress is None else _fit_progress(progress))
            fit, summary = analysis.fit, analysis.summary
            curves, fit_times = self._decay_curves(image, fit, analysis.labels,
                                                   analysis.label_names, summary)
            # The panel also shows the summary's notes (unknown field strength, no reference...).
            notes = unique(analysis.warnings + list(summary.get("notes") or []))

            attributes = self._table_attributes(fit, image, summary, notes)
            nodes = mrml.write_maps(desc, image, fit, reuse=reuseOutputs, scene=scene)
            if "pdff" not in nodes and reuseOutputs:
                mrml.remove_outputs(desc.primary, ["pdff"], scene)
            rows = self._rows(summary)
            nodes["table"] = mrml.write_table(desc, rows, attributes, reuse=reuseOutputs, scene=scene)
            if curves:
                nodes["plot"] = mrml.write_plot(desc, image.echo_times_ms, curves, fit_times,
                                                fit.quantity, reuse=reuseOutputs, scene=scene)
            if regions is not None:  # focal findings: a segmentation and a table
                nodes.update(mrml.write_focal_findings(desc, image, summary.get("focal_findings") or [],
                                                       reuse=reuseOutputs, scene=scene))
        seconds = time.perf_counter() - started
        log.info("IronMapping: %s fitted in %.1f s (method %s)", desc.name, seconds, fit.method)
        return IronMappingResult(nodes=nodes, fit=fit, image=image, summary=summary,
                                 warnings=notes, seconds=seconds)

    # ------------------------------------------------------------------ pieces

    @staticmethod
    def _rows(summary) -> list[dict]:
        from .quantification import regions_table

        return regions_table(summary)

    @staticmethod
    def _table_attributes(fit, image, summary, notes) -> dict:
        pattern = summary.get("pattern") or {}
        calibration = summary.get("calibration") or {}
        return {
            "Quantity": fit.quantity, "Method": fit.method,
            "MethodReference": fit.provenance().get("method_reference", ""),
            "EchoTimesMs": [float(t) for t in fit.echo_times_ms],
            "FieldStrengthT": "" if image.field_strength_t is None else f"{image.field_strength_t:g}",
            "FieldStrengthSource": summary.get("field_strength_source") or "",
            "Calibration": calibration, "Pattern": pattern.get("text", "") if isinstance(pattern, dict) else str(pattern),
            "Units": "R2* 1/s; T2* ms; LIC mg Fe/g dry weight; volume mL",
            "Warnings": notes, "Software": f"IronMapping {__version__}", "Version": __version__,
            "ResearchUse": RESEARCH_USE_STATEMENT,
            # Full-precision numbers (a saved table keeps 6 significant digits per cell).
            "Summary": summary,
        }

    @staticmethod
    def _decay_curves(image, fit, labels, names, summary):
        """Mean signal per region and its ROI-averaged fit (the one in the statistics table)."""
        values = [v for v in sorted(names) if np.any(labels == v)]
        if not values:
            return [], None
        from .regions import mean_decay

        te = image.echo_times_ms
        means = mean_decay(image.signal, labels, values).T
        rms = mean_decay(image.signal, labels, values, "rms").T
        roi_fits = {r.get("label_value"): (r.get("roi_fit") or {}) for r in summary.get("regions") or []}
        fit_times = np.linspace(0.0, float(te[-1]) * 1.05, 120)
        curves = []
        for n, value in enumerate(values):
            roi = roi_fits.get(value) or {}
            curve = np.full(fit_times.size, np.nan)
            if roi.get("r2star") is not None and roi.get("s0") is not None:
                curve = model_curve(fit_times, roi["s0"], roi["r2star"], roi.get("method"),
                                    fit.noise_sigma, fit.coils)
            # The noise-corrected ROI fit works on the root-mean-square signal (see regions.roi_fit).
            points = rms[:, n] if roi.get("method") == "noise-corrected" else means[:, n]
            curves.append({"name": names[value], "mean": points, "fit": curve,
                           "r2star": roi.get("r2star"), "method": roi.get("method")})
        return curves, fit_times


def _fit_progress(progress: Callable[[float], None]):
    """The panel's progress(fraction) as the analysis' progress(stage, fraction) (fit stage)."""
    return lambda stage, fraction: progress(fraction) if stage == "fit" and fraction is not None else None


def field_strength_source(typed, image, recorded=None) -> str:
    """Where the field strength used came from, in words (for the summary and the table).

    Parameters
    ----------
    typed : float or None
        Field strength in T given by the user.
    image : MultiEchoImage
    recorded : float, optional
        Field strength in T of the input's metadata.

    Returns
    -------
    str
    """
    if typed:
        text = "given by the user (fieldStrengthT, the panel's field strength)"
        if recorded and abs(float(typed) - recorded) > 0.1:
            text += f", replacing the {recorded:g} T of the DICOM metadata"
        return text
    if image.field_strength_t is not None:
        return "from the input's DICOM metadata (MagneticFieldStrength 0018,0087)"
    return "unknown (not in the input's metadata and not given)"


def check_segmentation_node(node) -> None:
    """Refuse anything but a segmentation node (or None) as ``segmentationNode``.

    Parameters
    ----------
    node : vtkMRMLNode or None

    Raises
    ------
    InputError
        Saying what to do; a label map volume is the usual mix-up.
    """
    if node is None or hasattr(node, "GetSegmentation"):
        return
    class_name = node.GetClassName() if hasattr(node, "GetClassName") else type(node).__name__
    name = node.GetName() if hasattr(node, "GetName") else str(node)
    if "LabelMap" in class_name:
        raise InputError(
            f"'{name}' is a label map volume, not a segmentation. Use a segmentation node as "
            "segmentationNode, or convert the label map first (Data module: right-click it, "
            "'Convert labelmap to segmentation node'; in Python: "
            "slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, "
            "segmentation)).")
    raise InputError(
        f"'{name}' ({class_name}) is not a segmentation. Give a segmentation node (Segment "
        "Editor) as segmentationNode, or None to summarise all fitted voxels.")


def model_curve(t_ms, s0, r2star, method=None, noise_sigma=None, coils=None):
    """Magnitude predicted by a mono-exponential fit: S0 exp(-R2* t).

    With the magnitude noise floor sqrt(A^2 + 2 L sigma^2) for the noise-corrected models.

    Parameters
    ----------
    t_ms : ndarray, shape (n,)
        Times in ms.
    s0 : float
        Signal at TE = 0 (signal units).
    r2star : float
        R2* in 1/s.
    method : str, optional
        Fit method; "noise-corrected", "noise-corrected-ml" or "ml" add the floor.
    noise_sigma : float, optional
        Noise SD per real channel (signal units).
    coils : float, optional
        Effective coil count L.

    Returns
    -------
    ndarray, shape (n,)
        Signal units.
    """
    amplitude = float(s0) * np.exp(-float(r2star) * np.asarray(t_ms, dtype=float) / 1000.0)
    if method in ("noise-corrected", "noise-corrected-ml", "ml") and noise_sigma:
        return np.sqrt(amplitude**2 + 2.0 * float(coils or 1.0) * float(noise_sigma) ** 2)
    return amplitude
