"""IronMapping: tissue iron from multi-echo MRI (3D Slicer extension library).

Research use only: not for clinical decisions. Submodules are imported on first use, so
``import IronMapping`` stays light and ``help(IronMapping.relaxometry.fit)`` works right after
it.

Modules
-------
Fitting
    ``relaxometry`` (R2*/T2* maps: ``fit``), ``estimators`` (vectorised estimators), ``crlb``,
    ``reference_fit`` (slow exact ML, for validation), ``fatwater`` package and ``fatmodel``
    (fat-corrected R2* and PDFF), ``noise``, ``noise_source``, ``echo_noise`` (noise level and
    coil count), ``tissue_mask`` (which voxels are fitted).
Analysis
    ``analysis`` (the one path fit -> summary -> warnings), ``quantification`` (``summarize``),
    ``regions`` (region statistics, ROI fits), ``calibration`` (LIC), ``grading``, ``organs``,
    ``patterns``, ``focal`` and ``focal_phase`` (focal findings), ``quantities`` (the table of
    reported quantities and maps), ``headline`` (the answer in words).
Files and runs
    ``io`` package (``load_multiecho``: DICOM, NIfTI, NRRD), ``image`` (``MultiEchoImage``),
    ``maps_io`` (map and label files), ``fileio`` (atomic writes, strict JSON), ``report``,
    ``report_figures``, ``display``, ``pipeline`` (headless run), ``batch``, ``cli``.
Digital reference objects
    ``phantom``, ``phantom_abdomen``.
Slicer glue (the only code that uses Slicer, Qt or MRML; ``Testing/test_slicer_glue.py``
checks)
    ``scene`` package (MRML nodes in and out), ``logic`` (``IronMappingLogic``),
    ``segment_statistics`` (Segment Statistics plugin), ``sample_data`` (Sample Data entries),
    and the scripted module ``IronMapping.py`` beside this package. Everything else is plain
    numpy/scipy/SimpleITK/pydicom/vtk.
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
