"""Focal findings in the scene: one segment per finding, named and coloured by kind, and
their table."""

from __future__ import annotations

from .. import RESEARCH_USE_STATEMENT, __version__
from ..errors import InputError
from ..image import MultiEchoImage
from .core import ATTRIBUTE_PREFIX, _get_or_create, _place_in_hierarchy, _set_attributes, mrml_scene
from .inputs import InputDescription
from .outputs import write_table
from .segments import import_labels


FOCAL_COLOURS = {
    "iron-sparing": (0.30, 0.75, 1.00),            # light blue: less iron than the organ
    "iron-dense": (0.85, 0.12, 0.10),              # dark red: more iron than the organ
    "iron-dense diamagnetic": (0.95, 0.95, 0.65),  # pale yellow: dense, field shift as calcium
}


def focal_colour(finding: dict) -> tuple:
    """Segment colour of a focal finding, by kind (and by field-shift sign for dense ones).

    Parameters
    ----------
    finding : dict
        One finding of ``summary["focal_findings"]``.

    Returns
    -------
    tuple of 3 float
        RGB 0..1.
    """
    shift = finding.get("field_shift") or {}
    if finding.get("kind") == "iron-dense" and shift.get("sign") == "diamagnetic":
        return FOCAL_COLOURS["iron-dense diamagnetic"]
    return FOCAL_COLOURS.get(finding.get("kind"), (0.6, 0.6, 0.6))


def focal_segment_name(finding: dict) -> str:
    """Segment name of a focal finding: id, kind, region and size (mL, or voxels).

    Parameters
    ----------
    finding : dict
        One finding of ``summary["focal_findings"]``.

    Returns
    -------
    str
    """
    volume = finding.get("volume_ml")
    size = f"{volume:.1f} mL" if volume is not None else f"{finding.get('n_voxels')} voxels"
    return f"{finding['id']} {finding['kind']} {finding['region']} {size}"


def write_focal_findings(desc: InputDescription, image: MultiEchoImage, findings: list,
                         attributes: dict | None = None, reuse: bool = True, scene=None) -> dict:
    """The "<input> focal findings" segmentation and its "<input> focal findings table".

    One segment per finding, named and coloured by kind. Re-running replaces the segments of
    the same node.

    Parameters
    ----------
    desc : InputDescription
        The input the findings belong to.
    image : MultiEchoImage
        The fitted image (grid of the findings' masks).
    findings : list of dict
        ``summary["focal_findings"]``.
    attributes : dict, optional
        Further ``IronMapping.*`` attributes of the nodes.
    reuse : bool
        Update the nodes of a previous run instead of adding new ones.
    scene : vtkMRMLScene, optional

    Returns
    -------
    dict
        {"focal_segmentation": node, "focal_table": node}.

    Raises
    ------
    InputError
        When the segments cannot be made.
    """
    from ..focal import findings_label_map, findings_table

    scene = mrml_scene(scene)
    node = _get_or_create(scene, desc.primary, "focal_findings", "vtkMRMLSegmentationNode",
                          f"{desc.name} focal findings", reuse)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    segmentation = node.GetSegmentation()
    segmentation.RemoveAllSegments()
    if findings:
        labels = findings_label_map(findings, image.shape)
        if not import_labels(scene, node, labels, image.ijk_to_ras, f"{desc.name} focal labels"):
            raise InputError(f"Could not make segments of the focal findings of {desc.name!r}.")
        by_value = {int(f.get("label_value", n)): f for n, f in enumerate(findings, start=1)}
        for n in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(n)
            finding = by_value.get(int(segment.GetLabelValue()))
            if finding is None:
                continue
            segment.SetName(focal_segment_name(finding))
            segment.SetColor(*focal_colour(finding))
            segment.SetTag(ATTRIBUTE_PREFIX + "FocalFinding", finding["id"])
            segment.SetTag(ATTRIBUTE_PREFIX + "FocalKind", finding["kind"])
            segment.SetTag(ATTRIBUTE_PREFIX + "Reading", finding.get("reading") or "")
    text = (f"{len(findings)} focal finding(s)" if findings else
            "No focal finding: no area departs from its organ's background beyond the uncertainty")
    _set_attributes(node, {"Quantity": "focal findings", "Findings": str(len(findings)),
                           "Text": text, "Software": f"IronMapping {__version__}",
                           "ResearchUse": RESEARCH_USE_STATEMENT})
    table = write_table(desc, findings_table(findings), dict(attributes or {}, Text=text),
                        key="focal_table", title="focal findings table", reuse=reuse, scene=scene)
    _place_in_hierarchy(scene, desc.primary, [node])
    return {"focal_segmentation": node, "focal_table": table}
