"""Making image metadata safe to write as JSON (provenance in reports and node attributes)."""

from __future__ import annotations

import numpy as np

#: Keys of MultiEchoImage.metadata holding arrays, left out of JSON.
ARRAY_KEYS = ("complex_components",)


def json_default(value):
    """``default=`` for json.dumps: numpy scalars and arrays as Python values, anything else as text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def json_safe(metadata: dict, max_list: int = 64) -> dict:
    """A copy of ``metadata`` that ``json.dumps`` accepts.

    Arrays in ``ARRAY_KEYS`` are replaced by their shapes, numpy scalars/arrays become Python
    numbers/lists, and lists longer than ``max_list`` (e.g. hundreds of source paths) are cut
    to their first items plus a count.
    """

    def conv(v):
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, np.ndarray):
            v = v.tolist()
        if isinstance(v, (list, tuple)):
            items = [conv(x) for x in v[:max_list]]
            if len(v) > max_list:
                items.append(f"... {len(v) - max_list} more")
            return items
        if isinstance(v, np.generic):
            return v.item()
        if v is None or isinstance(v, (str, int, float, bool)):
            return v
        return str(v)

    out = {}
    for k, v in metadata.items():
        if k in ARRAY_KEYS and isinstance(v, dict):
            out[k] = {name: list(np.shape(a)) for name, a in v.items()}
        else:
            out[k] = conv(v)
    return out
