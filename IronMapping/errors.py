"""Exceptions raised by IronMapping.

Every message says what is wrong and what to do about it, because it is shown as is
to the person at the scanner console or in Slicer's error dialog.
"""


class IronMappingError(Exception):
    """Base class of every error IronMapping raises on purpose."""


class InputError(IronMappingError, ValueError):
    """The input (signal, echo times, mask, geometry, segments, files) cannot be used."""


class EchoTimeError(InputError):
    """Echo times are missing, duplicated, unsorted or do not match the data."""


class GeometryError(InputError):
    """Echoes, maps or regions do not share one voxel grid."""


class CalibrationError(IronMappingError, ValueError):
    """A calibration or grading table cannot be applied to these data (e.g. wrong field strength)."""


class FitCancelled(IronMappingError):
    """The user cancelled a running fit; no partial result is returned."""


class OutputError(IronMappingError, OSError):
    """The outputs cannot be written (read-only or protected folder, disk full, ...)."""
