"""Iron distribution pattern (parenchymal / reticuloendothelial / mixed / none / indeterminate)
and support for neonatal haemochromatosis (NH), from per-organ results.

    >>> from IronMapping.patterns import classify_pattern
    >>> classify_pattern(regions, field_strength_t=1.5)["kind"]

`regions` are dicts as in the summary's "regions" list (keys organ, name, r2star_median,
t2star_median, iron_loaded, n_included). An organ counts as iron-loaded by its published grade
(liver R2*, heart T2*, pancreas T2*; see IronMapping.grading). The spleen has no published
cut-off; it counts as spared when its R2* is within the upper limit of NORMAL LIVER R2* at the
same field (65 1/s at 1.5 T, 119 1/s at 3 T; PMC8528353 Table 7) - a proxy, said so in the output.

Rules (after Chavhan 2022, Pediatr Radiol 52:334):
- reticuloendothelial: spleen loaded, pancreas and heart not;
- parenchymal: pancreas or heart loaded with the spleen spared, or the liver loaded with the
  spleen spared;
- mixed: spleen loaded and pancreas or heart loaded;
- none: no organ loaded.
An organ that is missing (not segmented, or without a cut-off at this field) is tried both ways;
when the answer depends on it the kind is "indeterminate" and the text says what is missing
(e.g. "spleen not segmented: cannot assess sparing").

NH support reports extrahepatic siderosis (pancreas / myocardium by their cut-offs; thyroid and
salivary glands by ratio only), spleen sparing, and the pancreas/spleen R2* ratio: a derived
index, not a validated criterion. Its wording never says NH is excluded when the pattern is
absent: NH without extrahepatic siderosis is reported (Lim 2025, Reports 8:53).
"""

from __future__ import annotations

import itertools

import numpy as np

from .grading import find_scheme

CHAVHAN_2022 = "Chavhan GB, et al. Pediatr Radiol 2022;52:334"
LIM_2025 = "Lim 2025, Reports 8:53"
DERIVED_INDEX_NOTE = ("Organ ratios are derived indices, not validated diagnostic criteria; no "
                      "quantitative neonatal cut-offs are published.")
NH_NOT_EXCLUDED = ("Absence of this pattern does not exclude neonatal haemochromatosis: NH "
                   f"without extrahepatic siderosis has been reported ({LIM_2025}).")
EXTRAHEPATIC_GRADED = ("pancreas", "heart")
EXTRAHEPATIC_DESCRIPTIVE = ("thyroid", "salivary gland")
KINDS = ("parenchymal", "reticuloendothelial", "mixed", "none", "indeterminate")


def spleen_normal_limit(field_strength_t) -> float | None:
    """Upper limit of normal liver R2* at this field, the spleen-sparing proxy.

    Parameters
    ----------
    field_strength_t : float or None
        Field strength in T.

    Returns
    -------
    float or None
        R2* in 1/s (65 at 1.5 T, 119 at 3 T); None without a liver scheme at that field.
    """
    scheme = find_scheme("liver", field_strength_t, "R2*")
    return None if scheme is None else float(scheme.bands[0].high)


def _r2star(row):
    """Median R2*, or its lower bound when the median is beyond what the echoes can measure."""
    v = row.get("r2star_median")
    return row.get("r2star_lower_bound") if v is None else v


def _valid(row) -> bool:
    v = _r2star(row)
    return v is not None and np.isfinite(v) and (row.get("n_included") or 0) > 0


def _largest(rows):
    rows = [r for r in rows if _valid(r)]
    return max(rows, key=lambda r: r.get("n_included") or 0) if rows else None


def organ_states(regions, field_strength_t) -> dict:
    """Iron state of the liver, spleen, pancreas and heart.

    Parameters
    ----------
    regions : list of dict
        Region rows as in the summary's "regions" list.
    field_strength_t : float or None
        Field strength in T.

    Returns
    -------
    dict
        {organ: {"loaded": True/False/None, "reason": str, "regions": [names],
        "r2star_median": float (1/s) or None}}.
    """
    states = {}
    by_organ: dict[str, list] = {}
    for row in regions:
        if row.get("organ"):
            by_organ.setdefault(row["organ"], []).append(row)
    for organ in ("liver", "spleen", "pancreas", "heart"):
        rows = by_organ.get(organ, [])
        state = {"loaded": None, "reason": None, "regions": [r.get("name") for r in rows],
                 "r2star_median": None}
        valid = [r for r in rows if _valid(r)]
        if not rows:
            state["reason"] = f"{organ} not segmented"
        elif not valid:
            state["reason"] = f"{organ} has no valid R2* (empty region or failed fits)"
        elif field_strength_t is None:
            state["reason"] = f"{organ}: field strength unknown, cut-offs cannot be applied"
        elif organ == "spleen":
            limit = spleen_normal_limit(field_strength_t)
            main = _largest(valid)
            state["r2star_median"] = main["r2star_median"]
            if limit is None:
                state["reason"] = f"spleen: no reference limit at {field_strength_t} T"
            else:
                above = "above " if main["r2star_median"] is None else ""
                state["loaded"] = bool(_r2star(main) > limit)
                state["reason"] = (f"spleen R2* {above}{_r2star(main):.1f} 1/s "
                                   f"{'>' if state['loaded'] else '<='} {limit:g} 1/s (upper limit "
                                   "of normal liver R2* used as proxy; no spleen cut-off is published)")
        else:
            graded = [r for r in valid if r.get("iron_loaded") is not None]
            main = _largest(valid)
            state["r2star_median"] = main["r2star_median"]
            if not graded:
                state["reason"] = f"{organ}: no published cut-off at {field_strength_t} T"
            else:
                state["loaded"] = any(r["iron_loaded"] for r in graded)
                grades = ", ".join(f"{r.get('name')}: {r.get('grade')}" for r in graded)
                state["reason"] = f"{organ} {'iron-loaded' if state['loaded'] else 'normal'} ({grades})"
        states[organ] = state
    return states


def _group(states, organs):
    values = [states[o]["loaded"] for o in organs]
    if any(v is True for v in values):
        return True
    if any(v is False for v in values):
        return False
    return None


def _kind(liver, res, extra) -> str:
    if res and extra:
        return "mixed"
    if res:
        return "reticuloendothelial"
    if extra or liver:
        return "parenchymal"
    return "none"


def _missing_text(name: str, states: dict, field_strength_t) -> str:
    if name == "spleen":
        why = states["spleen"]["reason"]
        if "not segmented" in why:
            return "spleen not segmented: cannot assess sparing"
        return f"{why}: cannot assess sparing"
    if name == "extrahepatic":
        reasons = "; ".join(states[o]["reason"] for o in EXTRAHEPATIC_GRADED)
        return f"{reasons}: cannot assess extrahepatic (pancreas/heart) siderosis"
    return f"{states['liver']['reason']}: cannot assess liver iron"


def classify_pattern(regions, field_strength_t, unassessable: str | None = None) -> dict:
    """Distribution pattern from region rows.

    Parameters
    ----------
    regions : list of dict
        Region rows as in the summary's "regions" list.
    field_strength_t : float or None
        Field strength in T; None gives "indeterminate".
    unassessable : str, optional
        A reason why no organ can be graded at all (e.g. spin-echo T2 maps); the kind is then
        "indeterminate" with that reason.

    Returns
    -------
    dict
        JSON-able. Keys: kind (one of KINDS), extrahepatic_siderosis (True/False/None),
        spleen_spared (True/False/None), liver_loaded, loaded_organs, missing (list of str),
        possible_kinds, organ_states (see `organ_states`), text, rules, nh_support (see
        `nh_support`).
    """
    states = organ_states(regions, field_strength_t)
    if unassessable:
        for state in states.values():
            state["loaded"] = None
            state["reason"] = unassessable
    liver = states["liver"]["loaded"]
    res = states["spleen"]["loaded"]
    extra = _group(states, EXTRAHEPATIC_GRADED)
    unknown = {"liver": liver is None, "spleen": res is None, "extrahepatic": extra is None}
    choices = {name: ((True, False) if unknown[name] else (value,))
               for name, value in (("liver", liver), ("spleen", res), ("extrahepatic", extra))}
    kinds = {}
    for lv, sp, ex in itertools.product(choices["liver"], choices["spleen"], choices["extrahepatic"]):
        kinds.setdefault(_kind(lv, sp, ex), []).append((lv, sp, ex))
    # Only the unknowns that change the answer are reported as missing.
    names = ("liver", "spleen", "extrahepatic")
    combos = list(itertools.product(choices["liver"], choices["spleen"], choices["extrahepatic"]))

    def flips(name):
        i = names.index(name)
        return any(_kind(*(c[:i] + (True,) + c[i + 1:])) != _kind(*(c[:i] + (False,) + c[i + 1:]))
                   for c in combos)

    deciding = [name for name in ("spleen", "extrahepatic", "liver") if unknown[name] and flips(name)]
    missing = [_missing_text(name, states, field_strength_t) for name in deciding]
    if unassessable:
        missing = [unassessable]
    not_assessed = [states[o]["reason"] for o in ("liver", "spleen", "pancreas", "heart")
                    if states[o]["loaded"] is None]
    loaded = [o for o in ("liver", "spleen", "pancreas", "heart") if states[o]["loaded"]]
    kind = next(iter(kinds)) if len(kinds) == 1 else "indeterminate"

    if unassessable:
        text = f"Indeterminate: {unassessable}."
    elif field_strength_t is None:
        text = ("Indeterminate: the field strength is unknown, so no organ can be graded "
                "(cut-offs differ between 1.5 T and 3 T). Give the field strength.")
    elif kind == "indeterminate":
        text = (f"Indeterminate: {'; '.join(missing)}. Possible patterns: "
                f"{', '.join(sorted(kinds))}.")
    else:
        description = {
            "parenchymal": "parenchymal pattern: iron in liver, pancreas or heart with the spleen spared",
            "reticuloendothelial": "reticuloendothelial pattern: iron in the spleen (and liver) with pancreas and heart spared",
            "mixed": "mixed pattern: iron in the spleen and in pancreas or heart",
            "none": "no iron overload in the assessed organs",
        }[kind]
        text = description[0].upper() + description[1:] + "."
        if loaded:
            text += f" Iron-loaded: {', '.join(loaded)}."
        if not_assessed:
            text += f" Not assessed: {'; '.join(not_assessed)}."
    out = {"kind": kind,
           "extrahepatic_siderosis": extra,
           "spleen_spared": None if res is None else (not res),
           "liver_loaded": liver,
           "loaded_organs": loaded,
           "missing": missing,
           "possible_kinds": sorted(kinds) if kind == "indeterminate" else [kind],
           "organ_states": states,
           "text": text,
           "rules": ("Organs graded by published cut-offs (IronMapping.grading); spleen spared when "
                     "its R2* is within the normal liver range at the same field (proxy). "
                     f"Pattern definitions after {CHAVHAN_2022}.")}
    out["nh_support"] = nh_support(regions, field_strength_t, out)
    return out


def _ratio(a, b):
    if a is None or b is None or not np.isfinite(a) or not np.isfinite(b) or b <= 0:
        return None
    return float(a / b)


def nh_support(regions, field_strength_t, pattern: dict | None = None) -> dict:
    """Neonatal haemochromatosis support: extrahepatic siderosis, spleen sparing and ratios.

    The text never words absence as excluding NH.

    Parameters
    ----------
    regions : list of dict
        Region rows as in the summary's "regions" list.
    field_strength_t : float or None
        Field strength in T.
    pattern : dict, optional
        The result of `classify_pattern` for these regions; computed when None.

    Returns
    -------
    dict
        Keys: extrahepatic_siderosis, extrahepatic_organs (loaded by cut-off), spleen_spared,
        nh_pattern_present (True/False/None), pancreas_spleen_r2star_ratio, ratios_r2star
        ({"organ/spleen" or "organ/skeletal muscle": ratio of median R2*}), derived_index (True),
        text, sources.
    """
    if pattern is None:
        return classify_pattern(regions, field_strength_t)["nh_support"]
    states = pattern["organ_states"]
    medians = {}
    for organ in ("liver", "spleen", "pancreas", "heart", "thyroid", "salivary gland",
                  "skeletal muscle", "kidney"):
        main = _largest([r for r in regions if r.get("organ") == organ])
        medians[organ] = None if main is None else main["r2star_median"]
    ratios = {}
    for organ in ("pancreas", "heart", "thyroid", "salivary gland", "liver"):
        for ref in ("spleen", "skeletal muscle"):
            value = _ratio(medians[organ], medians[ref])
            if value is not None:
                ratios[f"{organ}/{ref}"] = value
    extra_organs = [o for o in EXTRAHEPATIC_GRADED if states[o]["loaded"]]
    extra = pattern["extrahepatic_siderosis"]
    spared = pattern["spleen_spared"]
    present = True if (extra and spared) else (None if extra is None or spared is None else False)
    ps = _ratio(medians["pancreas"], medians["spleen"])
    parts = []
    if present:
        parts.append(
            f"Extrahepatic siderosis ({', '.join(extra_organs)}) with sparing of the spleen: the "
            "distribution described in neonatal haemochromatosis / gestational alloimmune liver "
            f"disease ({CHAVHAN_2022}). Liver siderosis alone is not specific.")
    elif present is False:
        found = []
        if not extra:
            found.append("no extrahepatic siderosis by the pancreas/heart cut-offs")
        if spared is False:
            found.append("the spleen is iron-loaded")
        parts.append(f"The NH-type distribution was not found ({'; '.join(found)}). {NH_NOT_EXCLUDED}")
    else:
        missing = [m for m in pattern["missing"]] or [
            states[o]["reason"] for o in ("spleen", "pancreas", "heart") if states[o]["loaded"] is None]
        parts.append(f"The NH-type distribution cannot be assessed ({'; '.join(missing)}). "
                     f"{NH_NOT_EXCLUDED}")
    if ps is not None:
        parts.append(f"Pancreas/spleen R2* ratio {ps:.2f}.")
    descriptive = [f"{o}/{ref} R2* ratio {ratios[f'{o}/{ref}']:.2f}"
                   for o in EXTRAHEPATIC_DESCRIPTIVE for ref in ("spleen", "skeletal muscle")
                   if f"{o}/{ref}" in ratios]
    if descriptive:
        parts.append("Thyroid and salivary glands have no published cut-off: "
                     + "; ".join(descriptive) + ".")
    parts.append(DERIVED_INDEX_NOTE)
    return {"extrahepatic_siderosis": extra, "extrahepatic_organs": extra_organs,
            "spleen_spared": spared, "nh_pattern_present": present,
            "pancreas_spleen_r2star_ratio": ps, "ratios_r2star": ratios,
            "derived_index": True, "text": " ".join(parts),
            "sources": [CHAVHAN_2022, LIM_2025]}
