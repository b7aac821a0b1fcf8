"""Reading multi-echo MR images from files: DICOM, NIfTI (+ JSON sidecars), NRRD.

Scripting contract::

    from IronMapping.io import load_multiecho
    image = load_multiecho("/path/to/dicom/folder")            # or NIfTI/.seq.nrrd/files
    image.signal          # float32 [echo, k, j, i]
    image.echo_times_ms   # increasing, ms
    image.ijk_to_ras      # 4x4, Slicer's RAS convention
    image.quantity        # "T2*" (gradient echo) or "T2" (spin echo)
    image.field_strength_t, image.metadata

``validate_echoes``/``stack_echoes`` hold the echo-time and geometry checks every input goes
through (also used by the MRML bridge for sequence nodes and scalar volumes in Slicer).
"""

from .checks import (EchoOrderWarning, EchoStack, check_magnitude, quantity_from_sequence,
                     reconcile_echo_times, stack_echoes, validate_echoes)
from .loader import list_series, load_multiecho
from .metadata import json_safe

__all__ = ["load_multiecho", "list_series", "validate_echoes", "stack_echoes", "EchoStack",
           "EchoOrderWarning", "check_magnitude", "quantity_from_sequence",
           "reconcile_echo_times", "json_safe"]
