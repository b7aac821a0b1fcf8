"""Fat-water separation with fat-corrected R2* and proton-density fat fraction (PDFF).

Modules:

- ``magnitude``: the magnitude fit |W + F c(t)| exp(-R2* t), two starts (MAGO/MAGORINO).
- ``likelihood``: Gaussian and noncentral-chi likelihoods of magnitude data.
- ``neighbourhood``: the magnitude start chosen from the evidence summed over neighbours.
- ``complex_fit``: the voxel-wise complex fit (W, F, R2*, field map, phase).
- ``fieldmap``: a spatially consistent field map (multi-resolution candidate selection).
- ``bipolar``: odd/even echo phase of bipolar readouts, estimated and removed.
- ``maps``: whole arrays (``fit_fatwater``) and the ``FatWaterFit`` result.
- ``inputs``: phase and readout of a loaded image for the fit (``fit_inputs_from_image``).
- ``checks``: shared limits, decision constants and input checks.

PDFF = 100 F / (W + F) percent.
"""

from .checks import FAT_DOMINANT_EVIDENCE, R2STAR_MAX, method_description
from .complex_fit import fit_fatwater_complex_chunk
from .inputs import fit_inputs_from_image
from .magnitude import fit_fatwater_chunk
from .maps import FatWaterFit, fit_fatwater
from .neighbourhood import choose_starts_by_neighbourhood

__all__ = ["FAT_DOMINANT_EVIDENCE", "R2STAR_MAX", "FatWaterFit", "choose_starts_by_neighbourhood",
           "fit_fatwater", "fit_fatwater_chunk", "fit_fatwater_complex_chunk",
           "fit_inputs_from_image", "method_description"]
