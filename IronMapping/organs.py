"""Recognise the organ a region shows from its name or its Slicer terminology code.

    >>> recognise_organ("Leber")
    OrganMatch(organ='liver', source='name', matched='leber')
    >>> recognise_organ(terminology="...~SCT^85756007^Tissue~SCT^10200004^Liver~^^~...")
    OrganMatch(organ='liver', source='terminology', matched='SCT^10200004')

Organs are the plain English names in `ORGANS`. The names list covers common English
spellings and a few German, French, Spanish, Italian and Dutch words; the codes are SNOMED CT
concepts as used by Slicer's terminology lists (checked against
Modules/Loadable/Terminologies/Resources/SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.json
and ...-DICOM-Master.json). Myocardium (74281007), skeletal muscle (127954009) and bone marrow
(14016003) are not in those lists; their SNOMED CT body-structure codes are included so that
segments coded by other tools are recognised too.

A match is only a suggestion: every caller can override it (``overrides``), and a region whose
organ is not recognised still gets its statistics.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Mapping

ORGANS = ("liver", "spleen", "pancreas", "heart", "thyroid", "kidney", "skeletal muscle",
          "lung", "bone marrow", "salivary gland", "lesion")

# SNOMED CT concept id -> organ.
SNOMED_CT_ORGANS = {
    "10200004": "liver",
    "78961009": "spleen",
    "15776009": "pancreas",
    "80891009": "heart",
    "74281007": "heart",            # myocardium structure
    "589001": "heart",              # interventricular septum
    "87878005": "heart",            # left ventricle
    "53085002": "heart",            # right ventricle
    "69748006": "thyroid",
    "64033007": "kidney",
    "127954009": "skeletal muscle",
    "71616004": "skeletal muscle",  # Slicer "Tissue / Muscle"
    "44947003": "skeletal muscle",  # erector spinae
    "195879000": "skeletal muscle",  # abdominal wall muscle
    "39607008": "lung",
    "45653009": "lung",             # upper lobe of lung
    "90572001": "lung",             # lower lobe of lung
    "72481006": "lung",             # middle lobe of right lung
    "31094006": "lung",             # lobe of lung
    "14016003": "bone marrow",
    "385294005": "salivary gland",
    "45289007": "salivary gland",   # parotid gland
    "54019009": "salivary gland",   # submandibular gland
}
# Codes that say "this is a focal abnormality" whatever organ it sits in.
SNOMED_CT_LESIONS = {
    "4147007": "mass",
    "108369006": "neoplasm",
    "86049000": "primary neoplasm",
    "14799000": "secondary neoplasm",
    "27925004": "nodule",
    "49755003": "morphologically altered structure",
}

# Checked in this order: a "liver lesion" is a lesion, "heart muscle" is the heart.
_NAME_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lesion", ("lesion", "\\w*lasion", "lesione", "\\w*laesion", "\\w*tumou?r", "tumeur", "mass", "nodul\\w*",
                "knoten", "herd", "raumforderung", "hcc", "metasta\\w*", "adenoma?", "focal",
                "emh", "ha?ematopoie\\w*", "cyst\\w*", "hemangioma", "haemangioma")),
    ("heart", ("heart", "cardiac", "myocard\\w*", "miocard\\w*", "myokard\\w*", "septum", "septal",
               "ivs", "herz\\w*", "coeur", "corazon", "cuore", "hart", "lv", "rv")),
    ("bone marrow", ("bone marrow", "marrow", "knochenmark", "moelle( osseuse)?", "medula osea",
                     "midollo( osseo)?", "beenmerg")),
    ("skeletal muscle", ("skeletal muscle", "muscle", "muscles", "muscul\\w*", "muskel\\w*",
                         "musculo", "muscolo", "spier\\w*", "paraspinal\\w*", "erector( spinae)?",
                         "psoas", "quadratus", "gluteus", "deltoid\\w*")),
    ("salivary gland", ("salivary( glands?)?", "parotid\\w*", "parotis", "submandibular\\w*",
                        "sublingual\\w*", "speicheldruse\\w*", "glande salivaire", "glandula salival",
                        "ghiandola salivare")),
    ("liver", ("liver", "hepar", "hepatic", "hepato\\w*", "leber", "foie", "higado", "fegato",
               "lever")),
    ("spleen", ("spleen", "splen\\w*", "milz", "rate", "bazo", "milza", "milt")),
    ("pancreas", ("pancrea\\w*", "pankrea\\w*")),
    ("thyroid", ("thyroid\\w*", "thyreo\\w*", "schilddruse", "tiroides", "tiroide", "schildklier")),
    ("kidney", ("kidneys?", "renal", "niere\\w*", "nier", "reins?", "rinon\\w*", "rene", "reni")),
    ("lung", ("lungs?", "pulmo\\w*", "lunge\\w*", "poumons?", "pulmon", "polmon[ei]")),
)
_COMPILED = tuple((organ, re.compile(r"\b(" + "|".join(words) + r")\b"))
                  for organ, words in _NAME_PATTERNS)


@dataclass(frozen=True)
class OrganMatch:
    """The organ a region was recognised as, and from what.

    organ : one of ORGANS, or None when not recognised
    source : "override", "terminology", "name" or None
    matched : the word or code that decided it
    """

    organ: str | None
    source: str | None
    matched: str | None


def normalise_name(name: str) -> str:
    """Name folded for matching: lower case, accents stripped, separators and digits as spaces.

    Parameters
    ----------
    name : str

    Returns
    -------
    str
    """
    text = unicodedata.normalize("NFKD", str(name))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.replace("ß", "ss")
    text = re.sub(r"([a-z])([0-9])", r"\1 \2", text)
    return re.sub(r"[^a-z]+", " ", text).strip()


def organ_from_name(name: str | None) -> OrganMatch:
    """Organ from a segment or label name in any of the spellings above.

    Parameters
    ----------
    name : str or None
        Segment or label name.

    Returns
    -------
    OrganMatch
        organ None when no spelling matches.
    """
    if not name:
        return OrganMatch(None, None, None)
    text = normalise_name(name)
    for organ, pattern in _COMPILED:
        m = pattern.search(text)
        if m:
            return OrganMatch(organ, "name", m.group(0))
    return OrganMatch(None, None, None)


def parse_terminology(entry: str) -> dict:
    """Split a Slicer TerminologyEntry tag into its parts.

    The tag holds 7 parts separated by "~" (context, category, type, type modifier, region
    context, region, region modifier); coded parts are "scheme^value^meaning".

    Parameters
    ----------
    entry : str
        The tag.

    Returns
    -------
    dict
        Keys category, type, type_modifier, region, region_modifier, each a (scheme, value,
        meaning) tuple or None; context and region_context as strings or None.
    """
    parts = str(entry).split("~")
    keys = ("context", "category", "type", "type_modifier", "region_context", "region",
            "region_modifier")
    out: dict = {}
    for key, part in zip(keys, parts + [""] * (len(keys) - len(parts))):
        if key.endswith("context"):
            out[key] = part or None
            continue
        triplet = part.split("^")
        if len(triplet) >= 2 and triplet[1]:
            out[key] = (triplet[0], triplet[1], triplet[2] if len(triplet) > 2 else "")
        else:
            out[key] = None
    return out


def _codes_in(terminology) -> list[tuple[str, str]]:
    """(role, code value) pairs from a tag string, a "SCT^value^meaning" triplet, a bare code,
    or a mapping with CodeValue / codeValue."""
    if terminology is None:
        return []
    if isinstance(terminology, Mapping):
        value = terminology.get("CodeValue") or terminology.get("codeValue") or terminology.get("code")
        return [("type", str(value))] if value else []
    text = str(terminology).strip()
    if "~" in text:
        parsed = parse_terminology(text)
        return [(role, parsed[role][1]) for role in ("type", "category", "region")
                if parsed.get(role)]
    if "^" in text:
        triplet = text.split("^")
        return [("type", triplet[1])] if len(triplet) > 1 and triplet[1] else []
    return [("type", text)] if text.isdigit() else []


def organ_from_terminology(terminology) -> OrganMatch:
    """Organ from a Slicer terminology entry (or a bare SNOMED CT code).

    A "Mass"/"Neoplasm"/"Nodule" type, or the "Morphologically altered structure" category,
    makes the region a lesion wherever its anatomic region says it is.

    Parameters
    ----------
    terminology : str, mapping or None
        A TerminologyEntry tag, a "SCT^value^meaning" triplet, a bare code, or a mapping with
        CodeValue / codeValue.

    Returns
    -------
    OrganMatch
        organ None when no code is known.
    """
    codes = _codes_in(terminology)
    for role, value in codes:
        if role in ("type", "category") and value in SNOMED_CT_LESIONS:
            return OrganMatch("lesion", "terminology", f"SCT^{value}")
    for role, value in codes:
        if role == "type" and value in SNOMED_CT_ORGANS:
            return OrganMatch(SNOMED_CT_ORGANS[value], "terminology", f"SCT^{value}")
    for role, value in codes:
        if role == "region" and value in SNOMED_CT_ORGANS:
            return OrganMatch(SNOMED_CT_ORGANS[value], "terminology", f"SCT^{value}")
    return OrganMatch(None, None, None)


def recognise_organ(name: str | None = None, terminology=None, override: str | None = None
                    ) -> OrganMatch:
    """Organ of one region: the override if given, else the terminology code, else the name.

    Parameters
    ----------
    name : str, optional
        Segment or label name.
    terminology : str, mapping, optional
        As in `organ_from_terminology`.
    override : str, optional
        An organ from ORGANS (any recognisable spelling), or "" / "none" to say the region is
        no organ we know (it then gets statistics only).

    Returns
    -------
    OrganMatch

    Raises
    ------
    InputError
        When ``override`` is not an organ IronMapping knows.
    """
    if override is not None:
        text = str(override).strip()
        if text.lower() in ("", "none", "other", "unknown"):
            return OrganMatch(None, "override", text)
        if text.lower() in ORGANS:
            return OrganMatch(text.lower(), "override", text)
        match = organ_from_name(text)
        if match.organ is None:
            from .errors import InputError
            raise InputError(
                f"Organ override {override!r} is not an organ IronMapping knows. Use one of: "
                f"{', '.join(ORGANS)} (or 'none').")
        return OrganMatch(match.organ, "override", text)
    match = organ_from_terminology(terminology)
    if match.organ is not None:
        return match
    return organ_from_name(name)
