"""What a loaded image offers the fat-water fit besides its magnitudes: phase and readout."""

from __future__ import annotations

import numpy as np

from .bipolar import readout_from_metadata


def complex_signal_from_image(image):
    """Complex echoes [echo, ...spatial] (complex64) from ``image.metadata["complex_components"]``
    (real + imaginary, or phase with the magnitude; see ``focal_phase.complex_echoes``), or None
    when there are none or they do not match the magnitude's shape.

    Parameters
    ----------
    image : MultiEchoImage
        A loaded image.

    Returns
    -------
    complex64 ndarray, (n_echoes, ...spatial), or None
    """
    from ..focal_phase import complex_echoes

    components = (getattr(image, "metadata", None) or {}).get("complex_components")
    if not components:
        return None
    data, _ = complex_echoes(components, image.signal)
    if data is None:
        return None
    z = np.asarray(data[...], dtype=np.complex64)
    return z if z.shape == np.shape(image.signal) else None


def fit_inputs_from_image(image):
    """Keyword arguments for ``fit_fatwater`` (or ``relaxometry.fit(method="fat-water")``) from a
    loaded ``MultiEchoImage``.

    ``complex_signal`` when the readers kept matching phase or real/imaginary images,
    ``readout`` ("bipolar"/"monopolar") when the DICOM or sidecar says so
    (``metadata["readout"]``); absent keys mean: magnitude only, readout detected ("auto").

    Parameters
    ----------
    image : MultiEchoImage
        A loaded image.

    Returns
    -------
    dict
        With none, one or both of the keys ``complex_signal`` and ``readout``.
    """
    out = {}
    z = complex_signal_from_image(image)
    if z is not None:
        out["complex_signal"] = z
    readout = readout_from_metadata(getattr(image, "metadata", None) or {})
    if readout is not None:
        out["readout"] = readout
    return out
