"""Output nodes: map volumes (from :data:`IronMapping.quantities.MAPS`), the statistics table
(columns from :data:`IronMapping.quantities.REGION_QUANTITIES`) and the decay plot."""

from __future__ import annotations

import json
import re
from typing import Sequence

import numpy as np

from .. import RESEARCH_USE_STATEMENT, __version__
from ..fileio import json_safe
from ..image import MultiEchoImage
from ..quantities import MAP_BY_KEY, MAPS, map_arrays
from .core import (ATTRIBUTE_PREFIX, INPUT_REFERENCE_ROLE, _get_or_create, _place_in_hierarchy,
                   _set_attributes, _slicer, find_output, mrml_scene, nodes_by_class, outputs_of,
                   remove_outputs)
from .inputs import InputDescription, _sequence_of_proxy


#: Output key -> (node name suffix, node class), from :data:`IronMapping.quantities.MAPS`.
#: Suffixes of R2*/T2* lose the star for spin echo.
MAP_OUTPUTS = {m.key: (m.node_name, m.node_class) for m in MAPS if m.scene}


def _colour_table(scene, key: str, name: str, colours: np.ndarray, names: Sequence[str] | None = None):
    """A user colour table owned by IronMapping (found again by attribute), colours [n, 4] 0..1."""
    slicer = _slicer()
    table = None
    for candidate in nodes_by_class(scene, "vtkMRMLColorTableNode"):
        if candidate.GetAttribute(ATTRIBUTE_PREFIX + "ColorTable") == key:
            table = candidate
    if table is None:
        table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
        table.SetAttribute(ATTRIBUTE_PREFIX + "ColorTable", key)
    table.SetTypeToUser()
    table.SetNumberOfColors(len(colours))
    table.GetLookupTable().SetNumberOfTableValues(len(colours))
    for i, (r, g, b, a) in enumerate(colours):
        label = names[i] if names is not None else ""
        table.SetColor(i, label, float(r), float(g), float(b), float(a))
    table.GetLookupTable().SetRange(0, len(colours) - 1)
    table.GetLookupTable().SetNanColor(0.0, 0.0, 0.0, 0.0)  # unfitted voxels (NaN) stay see-through
    _ = slicer
    return table


def iron_colours(n: int = 256, reverse: bool = False) -> np.ndarray:
    """"Iron" colour ramp: black -> deep red -> orange -> yellow -> white (more iron, hotter).

    Parameters
    ----------
    n : int
        Number of colours.
    reverse : bool
        White to black (T2*: shorter hotter).

    Returns
    -------
    ndarray, shape (n, 4)
        RGBA 0..1.
    """
    x = np.linspace(0.0, 1.0, n)
    r = np.clip(1.6 * x, 0, 1)
    g = np.clip(1.6 * x - 0.55, 0, 1)
    b = np.clip(2.5 * x - 1.5, 0, 1)
    rgba = np.stack([r, g, b, np.ones(n)], axis=1)
    return rgba[::-1].copy() if reverse else rgba


def status_colours() -> tuple[np.ndarray, list[str]]:
    """Colours and names of the fit status codes, for the status label map.

    Returns
    -------
    colours : ndarray, shape (n_codes, 4)
        RGBA 0..1 (code 0 transparent).
    names : list of str
        "<name>: <sentence>" per code.
    """
    from ..relaxometry import Status

    palette = {0: (0, 0, 0, 0), 1: (0.2, 0.7, 0.3, 1), 2: (0.95, 0.8, 0.1, 1),
               3: (0.9, 0.3, 0.1, 1), 4: (0.7, 0.2, 0.8, 1), 5: (0.2, 0.4, 0.9, 1)}
    n = max(int(s) for s in Status) + 1
    colours = np.array([palette.get(i, (0.5, 0.5, 0.5, 1)) for i in range(n)], dtype=float)
    names = [f"{Status(i).name.lower().replace('_', ' ')}: {Status.describe(i)}" for i in range(n)]
    return colours, names


def _robust_range(values: np.ndarray, lo_pct=1.0, hi_pct=99.0, floor=None) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [lo_pct, hi_pct])
    if floor is not None:
        lo = max(lo, floor)
    if hi <= lo:
        hi = lo + max(abs(lo) * 0.1, 1.0)
    return float(lo), float(hi)


def _quantity_names(quantity: str) -> dict:
    return {k: MAP_BY_KEY[k].name_for(quantity) for k in ("r2star", "t2star")}


def write_maps(desc: InputDescription, image: MultiEchoImage, fit, extra_attributes=None,
               reuse: bool = True, scene=None) -> dict:
    """Create or update one volume node per map of a fit shown in Slicer.

    The maps of :data:`IronMapping.quantities.MAPS` with ``scene``: r2star, t2star, s0,
    quality, status, r2star_sd, and pdff when the fit has it. With ``reuse``, the nodes of
    optional maps an earlier run made and this fit lacks (a PDFF map after a fit without
    fat-water) are removed.

    Parameters
    ----------
    desc : InputDescription
        The input; outputs are named after it and reference it.
    image : MultiEchoImage
        The fitted image (geometry of the maps).
    fit : RelaxometryFit
    extra_attributes : dict, optional
        Further ``IronMapping.*`` attributes of every map node.
    reuse : bool
        Update the nodes of a previous run instead of adding new ones.
    scene : vtkMRMLScene, optional

    Returns
    -------
    dict of str to vtkMRMLVolumeNode
        By map key.
    """
    slicer = _slicer()
    from ..maps_io import map_metadata

    scene = mrml_scene(scene)
    provenance = fit.provenance()
    matrix = slicer.util.vtkMatrixFromArray(image.ijk_to_ras)
    transform = desc.primary.GetParentTransformNode() if hasattr(desc.primary, "GetParentTransformNode") else None
    nodes = {}
    for key, array in map_arrays(fit, "scene").items():
        spec = MAP_BY_KEY[key]
        node = _get_or_create(scene, desc.primary, key, spec.node_class,
                              f"{desc.name} {spec.name_for(fit.quantity)}", reuse)
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array, dtype=spec.dtype))
        node.SetIJKToRASMatrix(matrix)
        if transform is not None:
            node.SetAndObserveTransformNodeID(transform.GetID())
        meta = map_metadata(key, provenance, fit.quantity)
        attrs = {
            "Map": key, "Quantity": meta["quantity"], "Unit": meta["unit"],
            "Description": meta["description"], "Method": fit.method,
            "RequestedMethod": getattr(fit, "requested_method", fit.method),
            "MethodReference": provenance.get("method_reference", ""),
            "EchoTimesMs": [float(t) for t in fit.echo_times_ms],
            "EchoTimeSource": image.metadata.get("echo_time_source", ""),
            "FieldStrengthT": "" if image.field_strength_t is None else f"{image.field_strength_t:g}",
            "NoiseSigma": "" if fit.noise_sigma is None else f"{fit.noise_sigma:g}",
            "NoiseSource": fit.noise_source, "Software": f"IronMapping {__version__}",
            "Version": __version__, "ResearchUse": RESEARCH_USE_STATEMENT,
            "Warnings": list(getattr(fit, "warnings", [])),
            "Provenance": provenance,
        }
        if "status_codes" in meta:
            attrs["StatusCodes"] = meta["status_codes"]
        attrs.update(extra_attributes or {})
        _set_attributes(node, attrs)
        _display_map(scene, node, key, np.asarray(array), fit.quantity)
        nodes[key] = node
    if reuse:
        remove_outputs(desc.primary, [m.key for m in MAPS if m.scene and m.key not in nodes], scene)
    _place_in_hierarchy(scene, desc.primary, nodes.values())
    return nodes


def _display_map(scene, node, key, array, quantity):
    """Colour table, window and (R2*) colour legend of a map node, as its MAPS entry says."""
    slicer = _slicer()
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is None:
        return
    spec = MAP_BY_KEY[key]
    name = spec.name_for(quantity)
    if spec.colour_map == "status":
        colours, labels = status_colours()
        table = _colour_table(scene, key, f"IronMapping {name}", colours, labels)
        display.SetAndObserveColorNodeID(table.GetID())
        return
    if spec.colour_map in ("iron", "iron-reversed"):
        table = _colour_table(scene, key, f"IronMapping {name}",
                              iron_colours(reverse=spec.colour_map == "iron-reversed"))
        display.SetAndObserveColorNodeID(table.GetID())
    else:
        grey = scene.GetNodeByID("vtkMRMLColorTableNodeGrey")
        if grey is not None:
            display.SetAndObserveColorNodeID(grey.GetID())
    lo, hi = spec.window
    if lo is None or hi is None:
        robust_lo, robust_hi = _robust_range(array, *spec.window_percentiles, floor=0.0)
        lo = robust_lo if lo is None else lo
        hi = robust_hi if hi is None else hi
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(lo, hi)
    if spec.legend and hasattr(slicer, "vtkSlicerColorLogic"):
        legend = None
        for i in range(node.GetNumberOfDisplayNodes()):
            if node.GetNthDisplayNode(i) is not None and node.GetNthDisplayNode(i).IsA("vtkMRMLColorLegendDisplayNode"):
                legend = node.GetNthDisplayNode(i)
        if legend is None:
            try:
                legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(node)
            except Exception:  # legends are a convenience; an old Slicer may lack them
                legend = None
        if legend is not None:
            legend.SetTitleText(f"{name} ({spec.unit})")
            legend.SetLabelFormat("%.0f")


_UNIT_IN_NAME = re.compile(r"\(([^()]*)\)\s*$")


def write_table(desc: InputDescription, rows: list[dict], attributes: dict | None = None,
                key: str = "table", title: str = "iron statistics", reuse: bool = True,
                descriptions: dict | None = None, scene=None):
    """Create or update a table node from row dicts (units in the column names).

    Columns that are quantities of :mod:`IronMapping.quantities` get its unit label, UCUM unit
    code (column properties ``unitCode``/``unitCodingScheme``) and description; the values
    are shown as given (``regions_table`` has rounded them to their display precision).

    Parameters
    ----------
    desc : InputDescription
        The input; the table is named "<input> <title>" and references it.
    rows : list of dict
        Keyed by column label.
    attributes : dict, optional
        Further ``IronMapping.*`` attributes of the node.
    key : str
        Output key of the table.
    title : str
        Node name after the input's name.
    reuse : bool
        Update the node of a previous run instead of adding a new one.
    descriptions : dict of str to str, optional
        Column descriptions by column label (beside those from the quantities table).
    scene : vtkMRMLScene, optional

    Returns
    -------
    vtkMRMLTableNode
    """
    import vtk

    from ..quantities import find as find_quantity

    scene = mrml_scene(scene)
    node = _get_or_create(scene, desc.primary, key, "vtkMRMLTableNode", f"{desc.name} {title}", reuse)
    columns = []
    for row in rows:
        for name in row:
            if name not in columns:
                columns.append(name)
    table = node.GetTable()
    was = node.StartModify()
    node.RemoveAllColumns()
    for name in columns:
        values = [row.get(name) for row in rows]
        kinds = {type(v) for v in values if v is not None}
        numeric = kinds and all(issubclass(k, (int, float, np.integer, np.floating)) and not issubclass(k, bool)
                                for k in kinds)
        integral = numeric and all(isinstance(v, (int, np.integer)) for v in values)
        if integral:
            array = vtk.vtkIntArray()
            for v in values:
                array.InsertNextValue(int(v))
        elif numeric:
            array = vtk.vtkDoubleArray()
            for v in values:
                array.InsertNextValue(np.nan if v is None else float(v))
        else:
            array = vtk.vtkStringArray()
            for v in values:
                array.InsertNextValue(_cell_text(v))
        array.SetName(name)
        table.AddColumn(array)
        quantity = find_quantity(name)
        match = _UNIT_IN_NAME.search(name)
        if quantity is not None and quantity.unit:
            node.SetColumnUnitLabel(name, quantity.unit)
        elif match:
            node.SetColumnUnitLabel(name, match.group(1))
        if quantity is not None and quantity.ucum:
            node.SetColumnProperty(name, "unitCode", quantity.ucum)
            node.SetColumnProperty(name, "unitCodingScheme", "UCUM")
        if descriptions and name in descriptions:
            node.SetColumnDescription(name, descriptions[name])
        elif quantity is not None and quantity.description:
            node.SetColumnDescription(name, quantity.description)
    node.SetUseColumnTitleAsColumnHeader(True) if hasattr(node, "SetUseColumnTitleAsColumnHeader") else None
    table.Modified()
    node.EndModify(was)
    node.Modified()
    _set_attributes(node, dict(attributes or {}))
    _place_in_hierarchy(scene, desc.primary, [node])
    return node


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(json_safe(value))
    return str(value)


def table_rows(table_node) -> list[dict]:
    """Rows of a table node as dicts (numbers as float or int, NaN for empty numeric cells).

    Parameters
    ----------
    table_node : vtkMRMLTableNode

    Returns
    -------
    list of dict
    """
    table = table_node.GetTable()
    names = [table.GetColumn(c).GetName() for c in range(table.GetNumberOfColumns())]
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for c, name in enumerate(names):
            column = table.GetColumn(c)
            if column.IsA("vtkIntArray"):
                row[name] = int(column.GetValue(r))
            elif column.IsA("vtkDataArray"):
                row[name] = float(column.GetTuple1(r))
            else:
                row[name] = column.GetValue(r)
        rows.append(row)
    return rows


def write_plot(desc: InputDescription, echo_times_ms, curves: list[dict], fit_times_ms,
               quantity: str = "T2*", reuse: bool = True, scene=None):
    """Plot each region's mean signal (markers) and fitted curve (line) against echo time.

    The data live in the table node "<input> decay curves".

    Parameters
    ----------
    desc : InputDescription
    echo_times_ms : ndarray, shape (n_echoes,)
        Echo times in ms.
    curves : list of dict
        {"name", "mean" (shape (n_echoes,), signal units), "fit" (shape
        (len(fit_times_ms),)), "r2star" (1/s)} per region.
    fit_times_ms : ndarray
        Times in ms of the fitted curves.
    quantity : str
        "T2*", or "T2" for spin echo (axis and legend wording).
    reuse : bool
        Update the nodes of a previous run instead of adding new ones.
    scene : vtkMRMLScene, optional

    Returns
    -------
    vtkMRMLPlotChartNode
    """
    slicer = _slicer()
    import vtk

    scene = mrml_scene(scene)
    names = _quantity_names(quantity)
    data = _get_or_create(scene, desc.primary, "plot-data", "vtkMRMLTableNode",
                          f"{desc.name} decay curves", reuse)
    te = np.asarray(echo_times_ms, dtype=float)
    tf = np.asarray(fit_times_ms, dtype=float)
    n_rows = max(te.size, tf.size)
    data.RemoveAllColumns()
    table = data.GetTable()

    def add_column(name, values):
        array = vtk.vtkDoubleArray()
        array.SetName(name)
        padded = np.full(n_rows, np.nan)
        padded[:len(values)] = values
        for v in padded:
            array.InsertNextValue(float(v))
        table.AddColumn(array)
        return name

    te_col = add_column("echo time (ms)", te)
    tf_col = add_column("fit echo time (ms)", tf)
    data.SetColumnUnitLabel(te_col, "ms")
    data.SetColumnUnitLabel(tf_col, "ms")
    table.Modified()
    _set_attributes(data, {"Quantity": "mean signal", "Unit": "a.u."})

    chart = _get_or_create(scene, desc.primary, "plot", "vtkMRMLPlotChartNode",
                           f"{desc.name} signal decay", reuse)
    chart.SetTitle(f"{desc.name}: mean signal and {names['r2star']} fit per region")
    chart.SetXAxisTitle("echo time (ms)")
    chart.SetYAxisTitle("mean signal (a.u.)")
    _set_attributes(chart, {"EchoTimesMs": [float(t) for t in te], "Software": f"IronMapping {__version__}"})

    wanted = set()
    palette = [(0.85, 0.1, 0.1), (0.1, 0.45, 0.85), (0.1, 0.6, 0.2), (0.8, 0.5, 0.0), (0.5, 0.2, 0.7),
               (0.0, 0.6, 0.6), (0.6, 0.4, 0.2), (0.9, 0.3, 0.6), (0.4, 0.4, 0.4)]
    for index, curve in enumerate(curves):
        colour = palette[index % len(palette)]
        mean_col = add_column(f"{curve['name']} mean signal (a.u.)", curve["mean"])
        fit_col = add_column(f"{curve['name']} fit (a.u.)", curve["fit"])
        r2 = curve.get("r2star")
        label_fit = f"{curve['name']} fit" + (f" ({names['r2star']} {r2:.1f} 1/s)" if r2 is not None and np.isfinite(r2) else "")
        for kind, column, x_col, label in (("points", mean_col, te_col, f"{curve['name']} mean"),
                                           ("line", fit_col, tf_col, label_fit)):
            series_key = f"series:{kind}:{curve['name']}"
            wanted.add(series_key)
            series = _get_or_create(scene, desc.primary, series_key, "vtkMRMLPlotSeriesNode", label, reuse)
            series.SetName(label)
            series.SetAndObserveTableNodeID(data.GetID())
            series.SetXColumnName(x_col)
            series.SetYColumnName(column)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetColor(*colour)
            if kind == "points":
                series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleNone)
                series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
            else:
                series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleSolid)
                series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
            if not chart.HasPlotSeriesNodeID(series.GetID()):
                chart.AddAndObservePlotSeriesNodeID(series.GetID())
    table.Modified()
    # Series of regions no longer analysed are IronMapping's own outputs: remove them.
    for key, node in outputs_of(desc.primary, scene).items():
        if key.startswith("series:") and key not in wanted:
            chart.RemovePlotSeriesNodeID(node.GetID())
            scene.RemoveNode(node)
    _place_in_hierarchy(scene, desc.primary, [data, chart])
    return chart


def r2star_map_for(volume_node, scene=None):
    """The IronMapping R2* map that belongs to a volume node.

    The node itself when it is one, the R2* map of the same run when it is another output (T2*,
    S0, ...), or the R2* map computed from it when it is an input (or a sequence's proxy
    volume).

    Parameters
    ----------
    volume_node : vtkMRMLVolumeNode or None
    scene : vtkMRMLScene, optional

    Returns
    -------
    vtkMRMLScalarVolumeNode or None
        None when there is none.
    """
    scene = mrml_scene(scene)
    if volume_node is None:
        return None
    key = volume_node.GetAttribute(ATTRIBUTE_PREFIX + "Output")
    if key == "r2star":
        return volume_node
    if key:
        source = volume_node.GetNodeReference(INPUT_REFERENCE_ROLE)
        return find_output(source, "r2star", scene) if source is not None else None
    found = find_output(volume_node, "r2star", scene)
    if found is None:
        sequence, _ = _sequence_of_proxy(volume_node, scene)
        found = find_output(sequence, "r2star", scene) if sequence is not None else None
    return found
