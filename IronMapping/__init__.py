"""IronMapping: tissue iron from multi-echo MRI (3D Slicer extension library).

Pure numpy/scipy/SimpleITK/pydicom code; no Qt. The only module that talks to MRML is
``IronMapping.scene``. Research use only: not for clinical decisions.

Submodules are imported on first use, so ``import IronMapping`` stays light and
``help(IronMapping.relaxometry.fit)`` works right after it.
"""

import importlib

__version__ = "0.1.0"

RESEARCH_USE_STATEMENT = (
    "For research use only. IronMapping is not a medical device and its results must not be "
    "used on their own for diagnosis or treatment decisions.")

#: Submodules reachable as attributes of the package (imported when first touched).
SUBMODULES = ("batch", "calibration", "cli", "crlb", "errors", "estimators", "fatmodel",
              "fatwater", "grading", "image", "io", "logic", "maps_io", "noise", "organs",
              "patterns", "phantom", "pipeline", "quantification", "quantities",
              "reference_fit", "regions", "relaxometry", "report", "sample_data", "scene",
              "segment_statistics")


def __getattr__(name):
    # PEP 562: IronMapping.relaxometry etc. without importing everything (and MRML) up front.
    if name in SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(SUBMODULES))
