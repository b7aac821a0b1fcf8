"""IronMapping: tissue iron from multi-echo MRI (3D Slicer extension library).

Pure numpy/scipy/SimpleITK/pydicom code; no Qt. The only module that talks to MRML is
``IronMapping.scene``. Research use only: not for clinical decisions.
"""

__version__ = "0.1.0"

RESEARCH_USE_STATEMENT = (
    "For research use only. IronMapping is not a medical device and its results must not be "
    "used on their own for diagnosis or treatment decisions.")
