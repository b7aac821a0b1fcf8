"""Making image metadata safe to write as JSON (provenance in reports and node attributes)."""

from __future__ import annotations

import numpy as np

from ..fileio import json_default, json_safe as _json_safe_value

__all__ = ["ARRAY_KEYS", "json_default", "json_safe"]

#: Keys of MultiEchoImage.metadata holding arrays, left out of JSON.
ARRAY_KEYS = ("complex_components",)


def json_safe(metadata: dict, max_list: int = 64) -> dict:
    """A copy of image metadata that ``json.dumps`` accepts (see :func:`fileio.json_safe`).

    Arrays in ``ARRAY_KEYS`` are replaced by their shapes, numpy scalars/arrays become Python
    numbers/lists, NaN and infinity None, and long lists (e.g. hundreds of source paths) are cut
    to their first items plus a count.

    Parameters
    ----------
    metadata : dict
        ``MultiEchoImage.metadata``.
    max_list : int
        Items kept of a longer list.

    Returns
    -------
    dict
    """
    out = {}
    for k, v in metadata.items():
        if k in ARRAY_KEYS and isinstance(v, dict):
            out[k] = {name: list(np.shape(a)) for name, a in v.items()}
        else:
            out[k] = _json_safe_value(v, max_list)
    return out


def readout_from_text(value) -> str | None:
    """'bipolar', 'monopolar' or None from a recorded readout description.

    Parameters
    ----------
    value : object
        Text (or anything with a text form): "bipolar"/"alternating" means bipolar,
        "monopolar"/"unipolar"/"flyback"/"fly-back" monopolar (case ignored).

    Returns
    -------
    str or None
        None when the text names neither.
    """
    text = str(value).lower()
    if "bipolar" in text or "alternat" in text:
        return "bipolar"
    if any(w in text for w in ("monopolar", "unipolar", "flyback", "fly-back")):
        return "monopolar"
    return None
