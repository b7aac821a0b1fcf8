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

log = logging.getLogger(__name__)

#: key -> (name, description, unit, UCUM code of the unit)
MEASUREMENTS = {
    "r2star_median": ("R2* median", "Median R2* of the fitted voxels", "1/s", ("/s", "per second")),
    "r2star_mean": ("R2* mean", "Mean R2* of the fitted voxels", "1/s", ("/s", "per second")),
    "r2star_sd": ("R2* SD", "Standard deviation of R2* of the fitted voxels", "1/s", ("/s", "per second")),
    "t2star_median": ("T2* median", "Median T2* (1000 / R2*) of the fitted voxels", "ms", ("ms", "millisecond")),
    "lic": ("LIC", "Liver iron concentration from the median R2* (liver segments only; calibration "
                   "named in the R2* map's help)", "mg Fe/g dry weight", ("mg/g", "milligram per gram")),
    "fitted_percent": ("Fitted voxels", "Share of the segment's voxels with a valid R2* fit", "%", ("%", "percent")),
}
DEFAULT_KEYS = ("r2star_median", "t2star_median", "lic", "fitted_percent")


def statistics(r2star_values, organ: str | None = None, field_strength_t: float | None = None,
               calibration=None) -> dict:
    """Statistics of the R2* values (1/s) of one segment; NaN values (failed fits) are excluded.

    LIC is given for liver only and only when the field strength suits the calibration
    (IronMapping.calibration.liver_iron_concentration); otherwise it is left out.
    """
    values = np.asarray(r2star_values, dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    result = {"fitted_percent": 100.0 * finite.size / values.size if values.size else 0.0}
    if finite.size == 0:
        return result
    median = float(np.median(finite))
    result.update(r2star_median=median, r2star_mean=float(finite.mean()),
                  r2star_sd=float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
                  t2star_median=float(np.median(1000.0 / finite[finite > 0])) if np.any(finite > 0) else None)
    if organ == "liver" and field_strength_t:
        from .calibration import liver_iron_concentration

        try:
            lic, _info = liver_iron_concentration(median, field_strength_t, calibration)
            result["lic"] = float(lic)
        except CalibrationError as exc:
            log.info("IronMapping Segment Statistics: no LIC (%s)", exc)
    return {k: v for k, v in result.items() if v is not None}


def compute_for_segment(segmentation_node, segment_id, volume_node, scene=None, calibration=None) -> dict:
    """Statistics of one segment on the R2* map that belongs to ``volume_node`` ({} if none)."""
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
    return statistics(mrml.volume_array(r2map)[mask], organ, field_t, calibration)


_PLUGIN_CLASS = None
#: The plugin's class name: the prefix of its keys in SegmentStatisticsLogic ("<class>.<key>").
PLUGIN_CLASS_NAME = "IronMappingSegmentStatisticsPlugin"


def run_segment_statistics(logic, segmentation_node, volume_node) -> dict:
    """Compute every key of the plugin with a SegmentStatisticsLogic, as a script would.

    ``logic`` is a ``SegmentStatisticsLogic()`` with the plugin registered. Its parameter node
    gets the segmentation, the scalar volume (an IronMapping R2* map, a sibling output or the
    multi-echo input), all segments (not only visible ones) and all of the plugin's keys.
    Returns {segment name: {key: value}} with the plugin's keys only (values as the logic
    stores them: R2* 1/s, T2* ms, LIC mg Fe/g dry weight, fitted %).
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
