"""R2*, T2* and liver iron in Slicer's Segment Statistics module.

Choose an IronMapping R2* map (or any of its sibling outputs, or the multi-echo input it was
computed from) as the scalar volume in Segment Statistics: the "Iron Mapping" plugin adds the
median and mean R2* (1/s), median T2* (ms), the share of fitted voxels and, for liver segments,
the liver iron concentration (mg Fe/g dry weight, default calibration). Failed-fit voxels (NaN)
are left out, which the generic scalar-volume statistics cannot do.

:func:`statistics` holds the arithmetic (numpy only); the plugin class exists only inside Slicer
(it derives from SegmentStatisticsPlugins.SegmentStatisticsPluginBase), created by
:func:`plugin_class` and registered by :func:`register`.
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import CalibrationError
from .quantities import BY_KEY, UCUM_MEANINGS

log = logging.getLogger(__name__)

# key -> (name, description, summary key of IronMapping.quantities whose unit it has)
_PLUGIN_MEASUREMENTS = {
    "r2star_median": ("R2* median", "Median R2* of the fitted voxels", "r2star_median"),
    "r2star_mean": ("R2* mean", "Mean R2* of the fitted voxels", "r2star_mean"),
    "r2star_sd": ("R2* SD", "Standard deviation of R2* of the fitted voxels", "r2star_sd"),
    "t2star_median": ("T2* median", "Median T2* (1000 / R2*) of the fitted voxels", "t2star_median"),
    "lic": ("LIC", "Liver iron concentration from the median R2* (liver segments only; calibration "
                   "named in the R2* map's help)", "lic_mg_per_g"),
    "fitted_percent": ("Fitted voxels", "Share of the segment's voxels with a valid R2* fit",
                       "excluded_fraction"),
    "censored_percent": ("R2* censored voxels", "Share of the counted voxels whose decay is faster "
                         "than the echoes can measure (ranked above every value)",
                         "r2star_censored_fraction"),
    "r2star_lower_bound": ("R2* lower bound", "Given when more than half of the voxels decay faster "
                           "than the echoes can measure: the median R2* is above this value",
                           "r2star_lower_bound"),
    "r2star_median_text": ("R2* median (text)", "Median R2*, or '> bound' when it is beyond what the "
                           "echoes can measure", "r2star_median"),
    "lic_lower_bound": ("LIC lower bound", "Liver iron concentration at the R2* lower bound (liver "
                        "segments whose median R2* is beyond what the echoes can measure)",
                        "lic_lower_bound"),
}
#: key -> (name, description, unit, (UCUM code, its meaning)); units from IronMapping.quantities.
MEASUREMENTS = {
    key: (name, description, BY_KEY[quantity].unit,
          (BY_KEY[quantity].ucum, UCUM_MEANINGS[BY_KEY[quantity].ucum]))
    for key, (name, description, quantity) in _PLUGIN_MEASUREMENTS.items()}
DEFAULT_KEYS = ("r2star_median", "t2star_median", "lic", "fitted_percent", "r2star_lower_bound",
                "lic_lower_bound")


def statistics(r2star_values, organ: str | None = None, field_strength_t: float | None = None,
               calibration=None, status_values=None, s0_values=None, echo_times_ms=None,
               noise_sigma: float | None = None, coils: float | None = None,
               reference_s0: float | None = None) -> dict:
    """Statistics of the R2* values of one segment; NaN values (failed fits) are excluded.

    With the fit's status (and S0, echo times, noise sigma and coil count) of the same voxels,
    voxels whose decay is faster than the echoes can measure are ranked above every value
    (IronMapping.regions.too_fast_voxels), so the median stays valid while fewer than half are
    that fast; beyond that "r2star_median" is left out and "r2star_lower_bound" (1/s) and, for
    liver, "lic_lower_bound" (mg Fe/g) are given; "r2star_median_text" reads e.g. "> 1444".
    The limit needs the tissue amplitude: the segment's well-measured voxels when they are the
    majority, else ``reference_s0`` (e.g. IronMapping.regions.image_tissue_amplitude).
    LIC is given for liver only and only when the field strength suits the calibration
    (IronMapping.calibration.liver_iron_concentration); otherwise it is left out.

    Parameters
    ----------
    r2star_values : ndarray, shape (n,)
        R2* in 1/s of the segment's voxels.
    organ : str, optional
        Recognised organ ("liver" gets LIC).
    field_strength_t : float, optional
        Field strength in T.
    calibration : str or Calibration, optional
        LIC calibration (None: the default).
    status_values : uint8 ndarray, shape (n,), optional
        Fit status of the same voxels.
    s0_values : ndarray, shape (n,), optional
        Fitted S0 (signal units).
    echo_times_ms : ndarray, shape (n_echoes,), optional
        Echo times in ms.
    noise_sigma : float, optional
        Noise SD per real channel (signal units).
    coils : float, optional
        Effective coil count L.
    reference_s0 : float, optional
        Tissue amplitude (signal units) when the segment's own is not measured.

    Returns
    -------
    dict
        Keys of MEASUREMENTS that have a value (None values are left out): fitted_percent,
        r2star_median_text, r2star_mean, r2star_sd, r2star_median (1/s), t2star_median (ms),
        censored_percent, r2star_lower_bound, lic or lic_lower_bound (mg Fe/g dw).
    """
    values = np.asarray(r2star_values, dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    # a text column must have a value in every row of the Segment Statistics table
    result = {"fitted_percent": 100.0 * finite.size / values.size if values.size else 0.0,
              "r2star_median_text": ""}
    bound = None
    if status_values is not None:
        from .regions import FITTED, censored_percentiles, protocol_limits, too_fast_voxels, well_measured

        status = np.asarray(status_values).ravel()
        s0 = (np.full(values.shape, np.nan) if s0_values is None
              else np.asarray(s0_values, dtype=np.float64).ravel())
        fitted = (status == FITTED) & np.isfinite(values)
        if noise_sigma and echo_times_ms is not None:
            # the tissue amplitude from the well-measured voxels, when they are the majority
            # (as IronMapping.regions.region_statistics without the signal)
            good = (fitted & ~too_fast_voxels(status, values, s0, noise_sigma, coils, echo_times_ms=echo_times_ms)
                    & well_measured(values, s0, echo_times_ms, noise_sigma, coils))
            if np.count_nonzero(good) >= 0.5 * np.count_nonzero(status != 0):
                reference_s0 = float(np.median(s0[good]))
        else:
            reference_s0 = None
        limits = (protocol_limits(echo_times_ms, reference_s0, noise_sigma, coils)
                  if echo_times_ms is not None else {"measurable_r2star": None, "lower_bound_r2star": None})
        censored = too_fast_voxels(status, values, s0, noise_sigma, coils, limits["measurable_r2star"],
                                   echo_times_ms=echo_times_ms)
        finite = values[fitted & ~censored]
        n_censored = int(np.count_nonzero(censored))
        if finite.size + n_censored:
            result["censored_percent"] = 100.0 * n_censored / (finite.size + n_censored)
        median = censored_percentiles(finite, n_censored, [50])[0]
        if median is None and n_censored:
            bound = limits["lower_bound_r2star"]
            result["r2star_median_text"] = "too fast to measure"
            if bound is not None:
                result.update(r2star_lower_bound=bound, r2star_median_text=f"> {bound:.0f}")
    else:
        median = float(np.median(finite)) if finite.size else None
        n_censored = 0
    if finite.size:
        result.update(r2star_mean=float(finite.mean()),
                      r2star_sd=float(finite.std(ddof=1)) if finite.size > 1 else 0.0)
    if median is not None:
        t2 = 1000.0 / finite[finite > 0]
        result.update(r2star_median=median, r2star_median_text=f"{median:.1f}",
                      t2star_median=(_censored_median_low(t2, n_censored) if status_values is not None
                                     else float(np.median(t2)) if t2.size else None))
    r2_for_lic = median if median is not None else bound
    if organ == "liver" and field_strength_t and r2_for_lic is not None:
        from .calibration import liver_iron_concentration, liver_iron_lower_bound

        try:
            if median is not None:
                result["lic"] = float(liver_iron_concentration(median, field_strength_t, calibration)[0])
            else:
                result["lic_lower_bound"] = float(liver_iron_lower_bound(bound, field_strength_t, calibration)[0])
        except CalibrationError as exc:
            log.info("IronMapping Segment Statistics: no LIC (%s)", exc)
    return {k: v for k, v in result.items() if v is not None}


def _censored_median_low(values, n_censored):
    from .regions import censored_percentiles

    return censored_percentiles(values, n_censored, [50], censored_high=False)[0]


def compute_for_segment(segmentation_node, segment_id, volume_node, scene=None, calibration=None) -> dict:
    """Statistics of one segment on the R2* map that belongs to a volume.

    Parameters
    ----------
    segmentation_node : vtkMRMLSegmentationNode
    segment_id : str
    volume_node : vtkMRMLScalarVolumeNode
        An IronMapping R2* map, a sibling output or the multi-echo input.
    scene : vtkMRMLScene, optional
        Default: Slicer's scene.
    calibration : str or Calibration, optional
        LIC calibration.

    Returns
    -------
    dict
        As :func:`statistics`; {} when the volume has no R2* map.
    """
    from . import scene as mrml
    from .organs import recognise_organ

    r2map = mrml.r2star_map_for(volume_node, scene)
    if r2map is None or r2map.GetImageData() is None:
        return {}
    shape, ijk_to_ras = mrml.volume_geometry(r2map)
    mask = mrml.segment_masks(segmentation_node, [segment_id], shape, ijk_to_ras, scene, r2map,
                              allow_empty=True)[segment_id]
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    organ = recognise_organ(segment.GetName(), mrml.segment_terminology(segment) or None).organ
    field_text = r2map.GetAttribute(mrml.ATTRIBUTE_PREFIX + "FieldStrengthT") or ""
    field_t = float(field_text) if field_text else None
    return statistics(mrml.volume_array(r2map)[mask], organ, field_t, calibration,
                      **_censoring_inputs(r2map, mask, scene))


def _censoring_inputs(r2map, mask, scene=None) -> dict:
    """Status and S0 of the same run's sibling maps, echo times and noise, for `statistics`."""
    import json

    from . import scene as mrml

    source = r2map.GetNodeReference(mrml.INPUT_REFERENCE_ROLE)
    status = mrml.find_output(source, "status", scene) if source is not None else None
    if status is None or status.GetImageData() is None:
        return {}
    s0 = mrml.find_output(source, "s0", scene)
    try:
        provenance = json.loads(r2map.GetAttribute(mrml.ATTRIBUTE_PREFIX + "Provenance") or "{}")
        status_values = mrml.volume_array(status)[mask]
        s0_values = mrml.volume_array(s0)[mask] if s0 is not None and s0.GetImageData() else None
    except (ValueError, IndexError):  # another run's grid, or an unreadable attribute
        return {}
    sigma = provenance.get("noise_sigma")
    sigma = sigma if isinstance(sigma, (int, float)) else None
    te, coils = provenance.get("echo_times_ms"), provenance.get("coils")
    reference = None
    if s0_values is not None and sigma and te:
        from .regions import image_tissue_amplitude

        reference = image_tissue_amplitude(mrml.volume_array(status), mrml.volume_array(r2map),
                                           mrml.volume_array(s0), te, sigma, coils)
    return {"status_values": status_values, "s0_values": s0_values, "echo_times_ms": te,
            "noise_sigma": sigma, "coils": coils, "reference_s0": reference}


_PLUGIN_CLASS = None
#: The plugin's class name: the prefix of its keys in SegmentStatisticsLogic ("<class>.<key>").
PLUGIN_CLASS_NAME = "IronMappingSegmentStatisticsPlugin"


def run_segment_statistics(logic, segmentation_node, volume_node) -> dict:
    """Compute every key of the plugin with a SegmentStatisticsLogic, as a script would.

    Its parameter node gets the segmentation, the scalar volume, all segments (not only visible
    ones) and all of the plugin's keys.

    Parameters
    ----------
    logic : SegmentStatisticsLogic
        With the plugin registered.
    segmentation_node : vtkMRMLSegmentationNode
    volume_node : vtkMRMLScalarVolumeNode
        An IronMapping R2* map, a sibling output or the multi-echo input.

    Returns
    -------
    dict
        {segment name: {key: value}} with the plugin's keys only (values as the logic stores
        them: R2* 1/s, T2* ms, LIC mg Fe/g dry weight, fitted %).
    """
    params = logic.getParameterNode()
    params.SetParameter("Segmentation", segmentation_node.GetID())
    params.SetParameter("ScalarVolume", volume_node.GetID())
    params.SetParameter("visibleSegmentsOnly", "False")
    params.SetParameter(PLUGIN_CLASS_NAME + ".enabled", "True")
    for key in MEASUREMENTS:
        params.SetParameter(f"{PLUGIN_CLASS_NAME}.{key}.enabled", "True")
    logic.computeStatistics()
    stats = logic.getStatistics()
    table = {}
    for segment_id in stats["SegmentIDs"]:
        name = stats[segment_id, "Segment"]
        table[name] = {key: stats[segment_id, f"{PLUGIN_CLASS_NAME}.{key}"] for key in MEASUREMENTS
                       if (segment_id, f"{PLUGIN_CLASS_NAME}.{key}") in stats}
    return table


def plugin_class():
    """The Segment Statistics plugin class (needs Slicer's SegmentStatistics module)."""
    global _PLUGIN_CLASS
    if _PLUGIN_CLASS is not None:
        return _PLUGIN_CLASS
    from SegmentStatisticsPlugins import SegmentStatisticsPluginBase

    class IronMappingSegmentStatisticsPlugin(SegmentStatisticsPluginBase):
        """R2*, T2* and LIC per segment from an IronMapping R2* map."""

        def __init__(self):
            super().__init__()
            self.name = "Iron Mapping"
            self.title = "Iron Mapping"
            self.keys = list(MEASUREMENTS)
            self.defaultKeys = list(DEFAULT_KEYS)

        def computeStatistics(self, segmentID):
            from . import scene as mrml

            requested = self.getRequestedKeys()
            if not requested:
                return {}
            parameters = self.getParameterNode()
            segmentation = mrml.node_by_id(parameters.GetParameter("Segmentation"))
            volume = mrml.node_by_id(parameters.GetParameter("ScalarVolume"))
            if segmentation is None or volume is None:
                return {}
            stats = compute_for_segment(segmentation, segmentID, volume)
            return {k: v for k, v in stats.items() if k in requested}

        def getMeasurementInfo(self, key):
            if key not in MEASUREMENTS:
                return None
            name, description, unit, (code, meaning) = MEASUREMENTS[key]
            return self.createMeasurementInfo(
                name=name, title=name, description=description, units=unit,
                unitsDicomCode=self.createCodedEntry(code, "UCUM", meaning, True))

    _PLUGIN_CLASS = IronMappingSegmentStatisticsPlugin
    return _PLUGIN_CLASS


def register() -> bool:
    """Register the plugin with Segment Statistics; False when that module is not available.

    SegmentStatisticsLogic keeps plugin classes in ``registeredPlugins`` and instantiates them
    in every logic. A class of the same name from before a Reload is replaced, so the new code
    is the one that runs (registerPlugin alone would keep the old class beside the new).
    """
    try:
        from SegmentStatistics import SegmentStatisticsLogic
        cls = plugin_class()
    except ImportError:
        return False
    registered = SegmentStatisticsLogic.registeredPlugins
    registered[:] = [c for c in registered if c is cls or c.__name__ != cls.__name__]
    if cls not in registered:
        SegmentStatisticsLogic.registerPlugin(cls())
    return True
