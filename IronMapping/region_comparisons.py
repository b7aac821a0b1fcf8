"""Comparisons between a summary's regions: ratios to the reference region, lesions against liver.

Internal to :func:`IronMapping.quantification.summarize`: each region's R2* ratio and signal
intensity ratio (Gandon 2004) to the reference region (skeletal muscle by default), and each
lesion against the largest liver region (`IronMapping.lesion_contrast.compare_lesion`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .grading import DESCRIPTIVE_ONLY
from .lesion_contrast import compare_lesion
from .region_summary import _Region, _Settings
from .roi_signal import signal_intensity_ratio


@dataclass(frozen=True)
class _Reference:
    """Ratios to the reference region (skeletal muscle by default), one entry per region."""

    index: int | None  # of the reference region
    ratio_r2star: tuple  # median R2* / the reference's, or None
    sir: tuple  # signal intensity ratio per echo, or None
    notes: tuple  # a note per region, or None
    sir_block: dict | None
    missing_note: str | None


@dataclass(frozen=True)
class _Lesions:
    """Lesions against the largest liver region."""

    entries: tuple  # summary["lesions"] dicts
    readings: dict  # region index -> lesion reading
    notes: dict  # region index -> note


def _reference_ratios(regions: list[_Region], reference_organ: str, s: _Settings) -> _Reference:
    """R2* ratios and signal intensity ratios to the largest ``reference_organ`` region."""
    masks = {r.name: r.mask for r in regions}
    candidates = [n for n, r in enumerate(regions)
                  if r.organ.organ == reference_organ and r.n_included > 0]
    index = max(candidates, key=lambda n: regions[n].n_included) if candidates else None
    n_regions = len(regions)
    if index is None:
        missing = (f"no {reference_organ} region: no reference ratios or signal intensity ratios "
                   f"(descriptive organs such as thyroid are compared with it)")
        return _Reference(None, (None,) * n_regions, (None,) * n_regions, (None,) * n_regions,
                          None, missing)
    reference = regions[index]
    ref_median = reference.stats["r2star_median"]
    ratios, sirs, notes = [], [], []
    for n, region in enumerate(regions):
        ratio = sir = note = None
        if n != index:
            if region.stats["r2star_median"] is not None and ref_median:
                ratio = region.stats["r2star_median"] / ref_median
            if s.signal is not None and region.stats["n_voxels"] > 0:
                sir = signal_intensity_ratio(s.signal, masks[region.name], masks[reference.name],
                                             s.echo_times_ms)["ratio"]
        if region.organ.organ in DESCRIPTIVE_ONLY and region.organ.organ not in (
                "skeletal muscle", "lesion") and ratio is not None:
            note = f"descriptive: R2* {ratio:.2f} x the {reference.name} reference"
        ratios.append(ratio)
        sirs.append(sir)
        notes.append(note)
    sir_block = None
    if s.signal is not None:
        sir_block = {"reference": reference.name, "reference_organ": reference_organ,
                     "echo_times_ms": [float(t) for t in s.echo_times_ms],
                     "regions": {r.name: v for r, v in zip(regions, sirs) if v is not None},
                     "note": ("mean signal of the region / mean signal of the reference per echo "
                              "(Gandon 2004, Lancet 363:357 uses liver / paraspinal muscle)")}
    return _Reference(index, tuple(ratios), tuple(sirs), tuple(notes), sir_block, None)


def _lesions(rows: list[dict], lesion_coverage_factor: float) -> _Lesions:
    """Each lesion region against the largest liver region (``regions.compare_lesion``)."""
    livers = [r for r in rows if r["organ"] == "liver" and r["n_included"] > 0]
    background = max(livers, key=lambda r: r["n_included"]) if livers else None
    entries, readings, notes = [], {}, {}
    for n, row in enumerate(rows):
        if row["organ"] != "lesion":
            continue
        if background is None:
            notes[n] = "no liver region: the lesion cannot be compared with background liver"
            entries.append({"lesion": row["name"], "background": None,
                            "text": "no liver region segmented: no comparison"})
        elif row["n_included"] == 0:
            entries.append({"lesion": row["name"], "background": background["name"],
                            "text": "lesion has no valid R2* (empty or failed): no comparison"})
        else:
            cmp = compare_lesion(row, background, lesion_coverage_factor)
            readings[n] = cmp["reading"]
            entries.append({"lesion": row["name"], "background": background["name"], **cmp})
    return _Lesions(tuple(entries), readings, notes)

