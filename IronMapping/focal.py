"""Iron within an organ: focal areas whose R2* departs from the organ's own background.

    >>> from IronMapping.focal import find_focal_findings
    >>> out = find_focal_findings(fit_result, labels, {1: "liver", 2: "spleen"},
    ...                           voxel_volume_ml=0.054, ijk_to_ras=image.ijk_to_ras)
    >>> out["findings"][0]["kind"], out["findings"][0]["volume_ml"], out["findings"][0]["reading"]

Within each organ region (liver, spleen, kidney, pancreas; a lesion region drawn inside an
organ counts as part of it), connected areas are found whose R2* is lower (iron-sparing:
a lesion that excludes iron, or focal sparing) or higher (iron-dense: focal siderosis, a
siderotic nodule, calcification or haemorrhage) than the organ's robust background by more
than the per-voxel uncertainty explains. Steps, all vectorised:

1. The organ edge is eroded by one voxel in-plane (partial volume with neighbours).
2. Background: median R2* of the eroded organ; its spread beyond the fit uncertainty,
   tau^2 = max(0, (1.4826 MAD)^2 - median(u^2)), is the organ's texture. Every voxel gets
   the variance u^2 + tau^2 (u = the fit's `uncertainty` map, SD of R2* in 1/s).
3. An inverse-variance-weighted 3 x 3 in-plane mean and its z against the background.
   Hysteresis: seeds |z| >= seed_z, grown through connected voxels with |z| >= grow_z of the
   same sign. Voxels whose decay is too fast to fit (status out of range) or with no signal
   inside the organ are dark and join iron-dense areas.
4. Extent: a voxel belongs to the focus when its own R2* is at least half-way from the
   background to the focus core (the 50 % partial-volume rule), kept when the area reaches
   the minimum size and its median differs from the background by more than
   ``coverage_factor`` x the combined per-voxel uncertainty and ``cluster_z`` standard errors.
5. The background is re-estimated without the found areas and steps 2-4 repeated once.

Readings (:mod:`IronMapping.focal_reading`) follow Belay et al. 2018 and Idilman et al. 2016.
The sign of the local field shift around dark areas, with phase data, is in
:mod:`IronMapping.focal_phase`. Research use only.

The focal code is split by concern; every name stays importable from here:

- :mod:`IronMapping.focal_settings`: `FocalOptions`, the kinds `SPARING` and `DENSE`;
- :mod:`IronMapping.focal_detection`: steps 1-5 for one organ (`analyse_organ`);
- :mod:`IronMapping.focal_reading`: a finding in words (`reading`, `confidence`);
- :mod:`IronMapping.focal_outputs`: masks as runs, label map, table and CSV.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
from scipy import ndimage

from .focal_detection import _CONNECTIVITY, PHANTOM_EXCESS_CV_RANGE, analyse_organ, bounding_box
from .focal_outputs import (FOCAL_TABLE_COLUMNS, findings_columns, findings_label_map,
                            findings_table, mask_from_runs, mask_runs, write_focal_csv)
from .focal_reading import BELAY_2018, IDILMAN_2016, confidence, reading
from .focal_settings import DENSE, FOCAL_ORGANS, KINDS, SPARING, FocalOptions, focal_options

__all__ = [
    # all organs (this module)
    "organ_domains", "find_focal_findings", "match_lesions",
    # focal_settings
    "FOCAL_ORGANS", "SPARING", "DENSE", "KINDS", "FocalOptions", "focal_options",
    # focal_detection
    "PHANTOM_EXCESS_CV_RANGE", "bounding_box", "analyse_organ",
    # focal_reading
    "BELAY_2018", "IDILMAN_2016", "reading", "confidence",
    # focal_outputs
    "mask_runs", "mask_from_runs", "findings_label_map", "FOCAL_TABLE_COLUMNS",
    "findings_table", "findings_columns", "write_focal_csv",
]


def organ_domains(regions, shape):
    """Analysis domains: each organ region plus the lesion regions that touch it.

    Parameters
    ----------
    regions : list of (int, str, str or None, bool ndarray of shape (k, j, i))
        (label value, name, organ, mask).
    shape : tuple of int
        (k, j, i).

    Returns
    -------
    list of (int, str, str, bool ndarray, list of str)
        (value, name, organ, domain, [lesion names]) for organs of any kind (the caller picks
        which to analyse).
    """
    organs = [r for r in regions if r[2] not in (None, "lesion")]
    lesions = [r for r in regions if r[2] == "lesion"]
    attached = {r[0]: [] for r in organs}
    domains = {r[0]: r[3] for r in organs}
    for value, name, _, mask in lesions:
        if not mask.any():
            continue
        box = bounding_box(mask, 1)
        grown = ndimage.binary_dilation(mask[box], _CONNECTIVITY)
        touch = [(int(np.count_nonzero(grown & o[3][box])), o[0]) for o in organs]
        touch = [t for t in touch if t[0] > 0]
        if touch:
            host = max(touch)[1]
            domains[host] = domains[host] | mask
            attached[host].append(name)
    return [(v, n, o, domains[v], attached[v]) for v, n, o, _ in organs]


def _centroid(mask, ijk_to_ras):
    box = bounding_box(mask)
    k, j, i = np.nonzero(mask[box])
    k, j, i = k + box[0].start, j + box[1].start, i + box[2].start
    centre_kji = np.array([k.mean(), j.mean(), i.mean()])
    ras = None
    if ijk_to_ras is not None:
        m = np.asarray(ijk_to_ras, float)
        ras = (m[:3, :3] @ centre_kji[::-1] + m[:3, 3]).tolist()
    return centre_kji, ras, (int(k.min()), int(k.max()))


def find_focal_findings(fit_result, regions, voxel_volume_ml=None, ijk_to_ras=None,
                        options=None, complex_signal=None, echo_times_ms=None,
                        field_strength_t=None, precession_clockwise: bool = True,
                        signal=None) -> dict:
    """Focal findings of every analysed organ.

    Parameters
    ----------
    fit_result : RelaxometryFit
        r2star, uncertainty, status on the grid (k, j, i).
    regions : list of (int, str, str or None, bool ndarray of shape (k, j, i))
        (label value, name, organ, mask).
    voxel_volume_ml : float, optional
        mL per voxel.
    ijk_to_ras : ndarray, shape (4, 4), optional
        Voxel index to RAS mm (centroids in RAS mm when given).
    options : FocalOptions or dict, optional
    complex_signal : complex ndarray, shape (n_echoes, k, j, i), or dict, optional
        Or the loader's ``complex_components`` dict, for the field-shift sign of iron-dense
        areas (see IronMapping.focal_phase).
    echo_times_ms : ndarray, shape (n_echoes,), optional
        Echo times in ms, for the phase analysis.
    field_strength_t : float, optional
        Field strength in T, for the phase analysis.
    precession_clockwise : bool
        ISMRM PrecessionIsClockwise of the phase data.
    signal : ndarray, shape (n_echoes, k, j, i), optional
        Magnitudes, needed only with phase images in ``complex_signal``.

    Returns
    -------
    dict
        "findings" (list of JSON-able dicts, the contract of summary["focal_findings"]),
        "organs" (per organ: background and heterogeneity), "settings", "grid_shape",
        "phase", "notes", "references", "heterogeneity_phantom_range".
    """
    from . import focal_phase

    options = focal_options(options)
    r2 = np.asarray(fit_result.r2star)
    shape = r2.shape
    findings, organs_out, notes = [], [], []
    phase = focal_phase.prepare(complex_signal, signal, echo_times_ms,
                                ijk_to_ras, field_strength_t, precession_clockwise, shape)
    for value, name, organ, domain, lesions in organ_domains(regions, shape):
        if organ not in options.organs:
            continue
        areas, info = analyse_organ(r2, fit_result.uncertainty, fit_result.status, domain,
                                    voxel_volume_ml, options)
        info.update(region=name, label_value=int(value), organ=organ, includes_lesions=lesions,
                    n_findings=len(areas))
        organs_out.append(info)
        areas.sort(key=lambda a: -a["n_voxels"])
        for area in areas:
            mask = area.pop("mask")
            centre_kji, ras, slices = _centroid(mask, ijk_to_ras)
            f = {"id": f"F{len(findings) + 1}", "label_value": len(findings) + 1,
                 "region": name, "organ": organ, "kind": area["kind"],
                 "volume_ml": (area["n_voxels"] * voxel_volume_ml) if voxel_volume_ml else None,
                 **{k: v for k, v in area.items() if k != "kind"}}
            f["ratio_r2star"] = (f["r2star_median"] / f["background_r2star_median"]
                                 if f["r2star_median"] is not None and f["background_r2star_median"]
                                 else None)
            f["centroid_ras"] = ras
            f["centroid_kji"] = centre_kji.tolist()
            f["slice_k"] = int(round(centre_kji[0]))
            f["slices_k"] = list(slices)
            f["confidence"] = confidence(f, options.coverage_factor)
            if f["kind"] == DENSE:
                f["field_shift"] = focal_phase.field_shift(phase, mask, domain)
            else:
                f["field_shift"] = None
            f["reading"] = reading(f, organ)
            f["matched_lesion"] = None
            f["mask_runs"] = mask_runs(mask)
            findings.append(f)
    if not organs_out:
        notes.append("no liver, spleen, kidney or pancreas region: no focal analysis")
    settings = asdict(options)
    settings["organs"] = list(options.organs)
    return {"findings": findings, "organs": organs_out, "settings": settings,
            "grid_shape": list(shape), "phase": focal_phase.describe(phase), "notes": notes,
            "references": [BELAY_2018, IDILMAN_2016],
            "heterogeneity_phantom_range": {"excess_cv": list(PHANTOM_EXCESS_CV_RANGE),
                                            "source": "IronMapping phantom, homogeneous organs, "
                                                      "SNR 20-100 (benchmark_focal.py)"}}


def match_lesions(findings: list, lesion_masks: dict, shape) -> dict:
    """User-drawn lesions matched with overlapping findings.

    Each matched finding gets "matched_lesion".

    Parameters
    ----------
    findings : list of dict
        With "mask_runs".
    lesion_masks : dict of str to bool ndarray, shape (k, j, i)
    shape : tuple of int
        (k, j, i).

    Returns
    -------
    dict
        {lesion name: {"finding", "kind", "overlap_fraction_of_lesion",
        "overlap_fraction_of_finding"} or None}.
    """
    out = {}
    masks = [mask_from_runs(f["mask_runs"], shape) for f in findings]
    for name, lesion in lesion_masks.items():
        n_lesion = int(np.count_nonzero(lesion))
        best = None
        for f, m in zip(findings, masks):
            overlap = int(np.count_nonzero(m & lesion))
            if overlap and (best is None or overlap > best[0]):
                best = (overlap, f, int(m.sum()))
        if best is None:
            out[name] = None
            continue
        overlap, f, n_f = best
        f["matched_lesion"] = name
        out[name] = {"finding": f["id"], "kind": f["kind"],
                     "overlap_fraction_of_lesion": overlap / n_lesion if n_lesion else None,
                     "overlap_fraction_of_finding": overlap / n_f}
    return out


