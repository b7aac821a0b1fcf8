"""Multi-echo MR from DICOM: classic single-frame files and enhanced multi-frame MR.

What is handled:

- one series holding all echoes interleaved (GE multi-echo: 25 slices x 8 echoes in one
  series must not become 200 slices): images are grouped by echo time, then ordered by their
  position along the slice normal;
- one series per echo (same study, frame of reference, grid, TR, flip angle, scanning
  sequence and protocol): such series are merged into one candidate;
- enhanced MR (one file, per-frame functional groups: plane position, orientation, pixel
  measures, MR echo, frame type, pixel value transformation);
- RescaleSlope/RescaleIntercept (per file or per frame) and Philips' private scale slope
  (2005,100E), which turns display values into comparable floating-point values;
- geometry from ImagePositionPatient/ImageOrientationPatient (LPS) into RAS;
- quantity from ScanningSequence (SE without GR: "T2") or EchoPulseSequence (SPIN: "T2");
- phase/real/imaginary images (ImageType, ComplexImageComponent, GE private (0043,102F)) are
  set aside and, when they match the magnitude echoes, kept in
  ``metadata["complex_components"]``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import EchoTimeError, GeometryError, InputError
from .checks import (field_strength_from, quantity_from_sequence, reconcile_echo_times,
                     stack_echoes)
from .geometry import slice_stack_ijk_to_ras

NOT_DICOM_SUFFIXES = (".nii", ".nii.gz", ".json", ".nrrd", ".nhdr", ".txt", ".md", ".mat",
                      ".png", ".jpg", ".jpeg", ".csv", ".py", ".xml", ".zip", ".mha", ".mhd",
                      ".raw", ".html", ".pdf", ".tsv", ".gz", ".bval", ".bvec", ".npy", ".npz")
_GE_COMPONENT = {0: "magnitude", 1: "phase", 2: "real", 3: "imaginary"}


@dataclass
class Frame:
    """One 2-D image (a classic file, or one frame of a multi-frame file).

    Attributes
    ----------
    path : str
    frame : int or None
        Frame index in a multi-frame file; None for a classic file.
    series_uid : str
        SeriesInstanceUID (the path when absent).
    series_number : int or None
    description : str
        SeriesDescription.
    echo_time : float or None
        Echo time in ms (EchoTime, or EffectiveEchoTime of multi-frame files).
    echo_number : int or None
        EchoNumbers (classic files only).
    component : str
        "magnitude", "phase", "real" or "imaginary".
    position : ndarray, (3,)
        ImagePositionPatient, mm (LPS).
    row_dir, col_dir : ndarray, (3,)
        Direction cosines of ImageOrientationPatient (LPS).
    pixel_spacing : tuple of 2 float
        PixelSpacing, mm.
    rows, cols : int
    slope, intercept : float
        Rescale of the stored values.
    philips_scale : float or None
        Philips ScaleSlope (2005,100E) for floating-point values, else None.
    slice_spacing : float or None
        SpacingBetweenSlices or SliceThickness, mm.
    te_tag : str
        The tag the echo time was read from, for messages.
    info : dict
        Acquisition facts shared by the file's frames (JSON-safe).
    derived : bool
        ImageType starts with DERIVED (e.g. a scanner-calculated map).
    """

    path: str
    frame: int | None
    series_uid: str
    series_number: int | None
    description: str
    echo_time: float | None
    echo_number: int | None
    component: str
    position: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    pixel_spacing: tuple
    rows: int
    cols: int
    slope: float
    intercept: float
    philips_scale: float | None
    slice_spacing: float | None
    te_tag: str
    info: dict = field(repr=False, default_factory=dict)
    derived: bool = False

    @property
    def normal(self):
        """Slice normal, the cross product of the row and column directions (LPS, unit length for
        orthonormal directions).
        """
        return np.cross(self.row_dir, self.col_dir)

    def grid_key(self):
        """Rows, columns, row and column directions and pixel spacing (rounded to 4 decimals):
        frames with equal keys lie on the same in-plane grid.
        """
        return (self.rows, self.cols, tuple(np.round(self.row_dir, 4)),
                tuple(np.round(self.col_dir, 4)),
                tuple(np.round(np.asarray(self.pixel_spacing, dtype=float), 4)))


def _float(v):
    try:
        if v is None or v == "":
            return None
        x = float(v)
        return x if np.isfinite(x) else None
    except (TypeError, ValueError):
        return None


def _int(v):
    try:
        if isinstance(v, (list, tuple)) or (hasattr(v, "__len__") and not isinstance(v, str)):
            v = v[0]
        return int(v)
    except (TypeError, ValueError, IndexError):
        return None


def _tokens(value):
    if value is None:
        return []
    if isinstance(value, str):
        return [t for t in value.replace("\\", " ").split() if t]
    return [str(t) for t in value]


def _component_from_image_type(image_type):
    toks = [t.strip().upper() for t in _tokens(image_type)][2:]
    tokset = set(toks)
    if tokset & {"P", "PHASE", "PHASE MAP"}:
        return "phase"
    if tokset & {"R", "REAL"}:
        return "real"
    if tokset & {"I", "IMAGINARY"}:
        return "imaginary"
    return "magnitude"


def _is_derived(image_type):
    toks = _tokens(image_type)
    return bool(toks) and toks[0].strip().upper() == "DERIVED"


def _ge_component(ds):
    try:
        elem = ds.get_private_item(0x0043, 0x2F, "GEMS_PARM_01")
    except (KeyError, AttributeError):
        return None
    val = _int(elem.value)
    return _GE_COMPONENT.get(val)


def _philips_scale(ds):
    if "PHILIPS" not in str(ds.get("Manufacturer", "")).upper():
        return None
    try:
        elem = ds.get_private_item(0x2005, 0x0E, "Philips MR Imaging DD 001")
    except (KeyError, AttributeError):
        return None
    val = _float(elem.value if not isinstance(elem.value, bytes) else
                 np.frombuffer(elem.value[:4], "<f4")[0])
    return val if val and val > 0 else None


_SIEMENS_READOUT = {1: "monopolar", 2: "bipolar"}
"""Siemens MrPhoenixProtocol ``ucReadOutMode`` of multi-echo sequences: 1 monopolar, 2 bipolar
(read from the CSA series header by MRtrix3, core file/dicom/image.cpp, and by Siemens raw-data
readers that label 2 'BiPolar'). GE and Philips have no documented public tag: not read."""


def _siemens_readout(ds):
    """'bipolar'/'monopolar' from the ASCCONV block of the Siemens CSA series header
    (0029,1020), or None."""

    if "SIEMENS" not in str(ds.get("Manufacturer", "")).upper():
        return None
    elem = ds.get((0x0029, 0x1020))
    raw = getattr(elem, "value", None)
    if not isinstance(raw, (bytes, bytearray)):
        return None
    match = re.search(rb"\bucReadOutMode\s*=\s*(0x[0-9a-fA-F]+|\d+)", raw)
    if match is None:
        return None
    return _SIEMENS_READOUT.get(int(match.group(1).decode(), 0))


def _series_info(ds):
    """Acquisition facts shared by a file's frames (JSON-safe values only)."""
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    timing = _first(shared, "MRTimingAndRelatedParametersSequence") if shared else None
    tr = _float(ds.get("RepetitionTime")) or (_float(timing.get("RepetitionTime"))
                                              if timing else None)
    flip = _float(ds.get("FlipAngle")) or (_float(timing.get("FlipAngle")) if timing else None)
    return {
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
        "manufacturer": str(ds.get("Manufacturer", "")) or None,
        "model": str(ds.get("ManufacturerModelName", "")) or None,
        "field_strength": ds.get("MagneticFieldStrength"),
        "scanning_sequence": _tokens(ds.get("ScanningSequence")) or None,
        "sequence_variant": _tokens(ds.get("SequenceVariant")) or None,
        "echo_pulse_sequence": str(ds.get("EchoPulseSequence", "")) or None,
        "sequence_name": str(ds.get("SequenceName", "") or ds.get("PulseSequenceName", ""))
        or None,
        "protocol_name": str(ds.get("ProtocolName", "")) or None,
        "repetition_time_ms": tr,
        "flip_angle_deg": flip,
        "receive_coil": str(ds.get("ReceiveCoilName", "")) or None,
        "acquisition_type": str(ds.get("MRAcquisitionType", "")) or None,
        "modality": str(ds.get("Modality", "")) or None,
        "sop_class_uid": str(ds.get("SOPClassUID", "")),
        "readout": _siemens_readout(ds),
    }


def _first(ds, keyword):
    if ds is None:
        return None
    seq = ds.get(keyword)
    if seq is None or len(seq) == 0:
        return None
    return seq[0]


def _group_value(per, shared, seq_kw, attr):
    for item in (per, shared):
        sub = _first(item, seq_kw) if item is not None else None
        if sub is not None and attr in sub:
            return sub.get(attr)
    return None


def _classic_frames(ds, path):
    ipp, iop, ps = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"), \
        ds.get("PixelSpacing")
    if ipp is None or iop is None or ps is None:
        return [], "no image position/orientation/pixel spacing"
    te = _float(ds.get("EchoTime"))
    comp = _ge_component(ds) or _component_from_image_type(ds.get("ImageType"))
    info = _series_info(ds)
    f = Frame(path=path, frame=None, series_uid=str(ds.get("SeriesInstanceUID", path)),
              series_number=_int(ds.get("SeriesNumber")),
              description=str(ds.get("SeriesDescription", "")),
              echo_time=te, echo_number=_int(ds.get("EchoNumbers")), component=comp,
              position=np.asarray([float(v) for v in ipp]),
              row_dir=np.asarray([float(v) for v in iop[:3]]),
              col_dir=np.asarray([float(v) for v in iop[3:6]]),
              pixel_spacing=(float(ps[0]), float(ps[1])), rows=int(ds.Rows),
              cols=int(ds.Columns), slope=_float(ds.get("RescaleSlope")) or 1.0,
              intercept=_float(ds.get("RescaleIntercept")) or 0.0,
              philips_scale=_philips_scale(ds),
              slice_spacing=_float(ds.get("SpacingBetweenSlices"))
              or _float(ds.get("SliceThickness")),
              te_tag="(0018,0081) EchoTime", info=info, derived=_is_derived(ds.get("ImageType")))
    return [f], None


def _enhanced_frames(ds, path):
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return [], "multi-frame file without per-frame functional groups"
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    info = _series_info(ds)
    top_comp = str(ds.get("ComplexImageComponent", "") or "").upper() or None
    frames = []
    for idx, per in enumerate(per_frame):
        ipp = _group_value(per, shared, "PlanePositionSequence", "ImagePositionPatient")
        iop = _group_value(per, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        ps = _group_value(per, shared, "PixelMeasuresSequence", "PixelSpacing")
        if ipp is None or iop is None or ps is None:
            return [], f"frame {idx + 1} lacks plane position/orientation/pixel measures"
        te = _float(_group_value(per, shared, "MREchoSequence", "EffectiveEchoTime"))
        comp_raw = _group_value(per, shared, "MRImageFrameTypeSequence",
                                "ComplexImageComponent") or top_comp
        comp = {"PHASE": "phase", "REAL": "real", "IMAGINARY": "imaginary"}.get(
            str(comp_raw or "").upper(), None)
        if comp is None:
            frame_type = _group_value(per, shared, "MRImageFrameTypeSequence", "FrameType")
            comp = _component_from_image_type(frame_type or ds.get("ImageType"))
        slope = _float(_group_value(per, shared, "PixelValueTransformationSequence",
                                    "RescaleSlope"))
        intercept = _float(_group_value(per, shared, "PixelValueTransformationSequence",
                                        "RescaleIntercept"))
        thickness = _float(_group_value(per, shared, "PixelMeasuresSequence",
                                        "SpacingBetweenSlices")) or \
            _float(_group_value(per, shared, "PixelMeasuresSequence", "SliceThickness"))
        frames.append(Frame(
            path=path, frame=idx, series_uid=str(ds.get("SeriesInstanceUID", path)),
            series_number=_int(ds.get("SeriesNumber")),
            description=str(ds.get("SeriesDescription", "")), echo_time=te,
            echo_number=None, component=comp,
            position=np.asarray([float(v) for v in ipp]),
            row_dir=np.asarray([float(v) for v in iop[:3]]),
            col_dir=np.asarray([float(v) for v in iop[3:6]]),
            pixel_spacing=(float(ps[0]), float(ps[1])), rows=int(ds.Rows),
            cols=int(ds.Columns),
            slope=slope if slope is not None else (_float(ds.get("RescaleSlope")) or 1.0),
            intercept=intercept if intercept is not None
            else (_float(ds.get("RescaleIntercept")) or 0.0),
            philips_scale=None, slice_spacing=thickness,
            te_tag="(0018,9082) EffectiveEchoTime", info=info,
            derived=_is_derived(_group_value(per, shared, "MRImageFrameTypeSequence",
                                             "FrameType") or ds.get("ImageType"))))
    return frames, None


def scan_files(paths):
    """Read DICOM headers (no pixels) of ``paths``.

    Parameters
    ----------
    paths : iterable of str
        Files to read; names with a known non-DICOM suffix and DICOMDIR files are passed over,
        files pydicom cannot read are left out silently.

    Returns
    -------
    frames : list of Frame
        Every 2-D image found (one per frame of a multi-frame file).
    skipped : list of (str, str)
        (path, reason) for DICOM files that are not images with geometry.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    frames, skipped = [], []
    for path in paths:
        low = path.lower()
        if low.endswith(NOT_DICOM_SUFFIXES) or os.path.basename(low) == "dicomdir":
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError):
            continue
        if "Rows" not in ds or "Columns" not in ds:
            skipped.append((path, "no image (e.g. a report or presentation state)"))
            continue
        nframes = _int(ds.get("NumberOfFrames")) or 1
        if nframes > 1 or "PerFrameFunctionalGroupsSequence" in ds:
            got, why = _enhanced_frames(ds, path)
        else:
            got, why = _classic_frames(ds, path)
        if why:
            skipped.append((path, why))
        frames.extend(got)
    return frames, skipped


def _echo_key(f: Frame):
    if f.echo_time is not None:
        return ("te", round(f.echo_time, 3))
    if f.echo_number is not None:
        return ("n", f.echo_number)
    return ("none", 0)


def _merge_key(f: Frame):
    i = f.info
    return (i["study_uid"], i["frame_of_reference_uid"], f.grid_key(),
            None if i["repetition_time_ms"] is None else round(i["repetition_time_ms"], 2),
            None if i["flip_angle_deg"] is None else round(i["flip_angle_deg"], 2),
            tuple(i["scanning_sequence"] or ()), i["echo_pulse_sequence"], i["protocol_name"])


class DicomCandidate:
    """One loadable multi-echo series (or set of per-echo series) found among DICOM files.

    Attributes
    ----------
    frames : list of Frame
        Magnitude frames of the candidate.
    series_frames : list of Frame
        Every frame of its series (for the phase, real and imaginary components).
    usable : bool
    reason : str
        Why it is not usable ("" when it is).
    series_numbers, series_uids, descriptions : list
        Of its series, sorted.
    identifiers : set of str
        Series numbers, UIDs and lower-case descriptions by which a caller may choose it.
    n_echoes : int
    te_range : tuple of 2 float or None
        Shortest and longest echo time, ms.
    n_slices : int
    """

    def __init__(self, frames, series_frames, usable=True, reason=""):
        self.frames = frames              # magnitude frames of the candidate
        self.series_frames = series_frames  # every frame of its series (for components)
        self.usable = usable
        self.reason = reason
        numbers = sorted({f.series_number for f in frames if f.series_number is not None})
        uids = sorted({f.series_uid for f in frames})
        descs = sorted({f.description for f in frames if f.description})
        self.series_numbers, self.series_uids, self.descriptions = numbers, uids, descs
        self.identifiers = {str(n) for n in numbers} | set(uids) | \
            {d.strip().lower() for d in descs}
        keys = sorted({_echo_key(f) for f in frames})
        self.n_echoes = len(keys)
        tes = sorted(f.echo_time for f in frames if f.echo_time is not None)
        self.te_range = (tes[0], tes[-1]) if tes else None
        self.n_slices = len(frames) // max(self.n_echoes, 1)

    @property
    def label(self):
        """Short name: "DICOM series <numbers> '<description>'".

        "series (one per echo)" when the echoes are separate series.
        """
        nums = "+".join(str(n) for n in self.series_numbers) or "?"
        kind = "series" if len(self.series_uids) == 1 else "series (one per echo)"
        desc = " / ".join(self.descriptions) or "no description"
        return f"DICOM {kind} {nums} '{desc}'"

    def summary(self):
        """One line for a list of series: label, echoes, TE range (ms), slices, matrix, UID."""
        f0 = self.frames[0]
        if self.te_range is None:
            te = ", no echo times"
        elif self.te_range[0] == self.te_range[1]:
            te = f", TE {self.te_range[0]:g} ms"
        else:
            te = f", TE {self.te_range[0]:g}-{self.te_range[1]:g} ms"
        uid = self.series_uids[0] if len(self.series_uids) == 1 else \
            f"{len(self.series_uids)} series UIDs"
        return (f"{self.label}: {self.n_echoes} echo{'es' if self.n_echoes != 1 else ''}{te}, "
                f"{self.n_slices} slices of {f0.rows}x{f0.cols} (UID {uid})")

    def load(self, echo_times_ms=None):
        """Load this candidate (see :func:`load_frames`).

        Parameters
        ----------
        echo_times_ms : sequence of float, optional
            Echo times in ms, one per echo, to use instead of (or where there are no) DICOM ones.

        Returns
        -------
        MultiEchoImage
        """
        return load_frames(self.frames, self.series_frames, echo_times_ms)


def find_candidates(paths):
    """Group DICOM files into candidate multi-echo series.

    Parameters
    ----------
    paths : iterable of str
        Files to read (see :func:`scan_files`).

    Returns
    -------
    candidates : list of DicomCandidate
        Usable or not (then with a reason), usable ones first, by series number. Per-echo series
        of one acquisition are merged; phase, real or imaginary series are attached to the
        magnitude candidate with the same grid and echoes.
    skipped : list of (str, str)
        (path, reason) for files that are not DICOM images with geometry.
    """
    frames, skipped = scan_files(paths)
    by_series = {}
    for f in frames:
        by_series.setdefault(f.series_uid, []).append(f)
    candidates, singles, phase_only = [], [], []
    for uid, sframes in by_series.items():
        mags = [f for f in sframes if f.component == "magnitude"]
        if any(f.derived for f in mags) and not all(f.derived for f in mags):
            # e.g. a scanner-calculated map stored with the echoes: fit the original images
            mags = [f for f in mags if not f.derived]
        if not mags:
            phase_only.append(sframes)
            continue
        orientations = {f.grid_key()[2:4] for f in mags}
        keys = {_echo_key(f) for f in mags}
        if len(orientations) > 1:
            candidates.append(DicomCandidate(
                mags, sframes, usable=False,
                reason="images with several orientations (e.g. a localiser)"))
        elif len(keys) >= 2:
            candidates.append(DicomCandidate(mags, sframes))
        elif keys == {("none", 0)}:
            candidates.append(DicomCandidate(
                mags, sframes, usable=False, reason="no EchoTime or EchoNumbers"))
        else:
            singles.append((mags, sframes))
    merged = {}
    for mags, sframes in singles:
        merged.setdefault(_merge_key(mags[0]), []).append((mags, sframes))
    for group in merged.values():
        tes = {_echo_key(m[0]) for m, _ in group}
        if len(group) >= 2 and len(tes) == len(group):
            mags = [f for m, _ in group for f in m]
            sframes = [f for _, s in group for f in s]
            candidates.append(DicomCandidate(mags, sframes))
        else:
            for m, s in group:
                candidates.append(DicomCandidate(m, s, usable=False,
                                                 reason="a single echo time"))
    # phase/real/imaginary series (e.g. Siemens writes phase as its own series): attach to
    # the magnitude candidate acquired with the same grid and echoes
    for sframes in phase_only:
        key = _merge_key(sframes[0])
        tes = {_echo_key(f) for f in sframes}
        for c in candidates:
            if c.usable and _merge_key(c.frames[0]) == key and \
                    tes == {_echo_key(f) for f in c.frames}:
                c.series_frames = c.series_frames + sframes
                break
        else:
            comp = sframes[0].component
            candidates.append(DicomCandidate(
                sframes, sframes, usable=False, reason=f"{comp} images only"))
    candidates.sort(key=lambda c: (not c.usable, c.series_numbers or [1 << 30]))
    return candidates, skipped


def _read_pixels(frames):
    """Pixel values with rescale applied, float32 [n, rows, cols], in the order of frames."""
    import pydicom

    out = np.empty((len(frames), frames[0].rows, frames[0].cols), dtype=np.float32)
    by_file = {}
    for n, f in enumerate(frames):
        by_file.setdefault(f.path, []).append((n, f))
    for path, items in by_file.items():
        try:
            ds = pydicom.dcmread(path)
            arr = ds.pixel_array
            rescaled = False
        except Exception as exc:  # noqa: BLE001 - any decoder failure: try SimpleITK (GDCM)
            arr = _read_with_sitk(path, exc)
            rescaled = True
        if arr.ndim == 2:
            arr = arr[None]
        for n, f in items:
            if f.rows != arr.shape[-2] or f.cols != arr.shape[-1]:
                raise GeometryError(f"{path}: pixel data is {arr.shape[-2:]} but the header "
                                    f"says {f.rows}x{f.cols}.")
            img = arr[f.frame or 0].astype(np.float32)
            if not rescaled:
                img = img * np.float32(f.slope) + np.float32(f.intercept)
            if f.philips_scale:
                img = img / np.float32(f.slope * f.philips_scale)
            out[n] = img
    return out


def _read_with_sitk(path, exc):
    import SimpleITK as sitk

    try:
        arr = sitk.GetArrayFromImage(sitk.ReadImage(path))
    except RuntimeError:
        raise InputError(
            f"The pixel data of {path} cannot be decoded ({exc}). It may use a compression "
            "pydicom cannot read here: decompress the folder first (e.g. 'gdcmconv --raw' or "
            "'dcmdjpeg'), or install pylibjpeg.") from None
    return arr


def _order_echo(frames, what):
    """Frames of one echo ordered along the slice normal; refuses mixed orientations."""
    normal = frames[0].normal
    grid = frames[0].grid_key()
    for f in frames[1:]:
        if f.grid_key() != grid:
            raise GeometryError(
                f"{what} mixes images of different size, orientation or pixel spacing "
                f"({os.path.basename(frames[0].path)} vs {os.path.basename(f.path)}). "
                "Load one stack at a time.")
    along = np.array([f.position @ normal for f in frames])
    order = np.argsort(along, kind="stable")
    ordered = [frames[i] for i in order]
    if np.any(np.diff(along[order]) < 1e-3):
        i = int(np.flatnonzero(np.diff(along[order]) < 1e-3)[0])
        raise InputError(
            f"{what} has two images at the same slice position "
            f"({os.path.basename(ordered[i].path)}, {os.path.basename(ordered[i + 1].path)}); "
            "the series may hold repeated acquisitions or several image types. Load the "
            "files of one acquisition only (pass them as a list).")
    return ordered


def load_frames(frames, series_frames=None, echo_times_ms=None):
    """Build a MultiEchoImage from magnitude frames (and set aside the other components).

    Parameters
    ----------
    frames : list of Frame
        Magnitude frames of one candidate, grouped into echoes by echo time (else echo number).
    series_frames : list of Frame, optional
        Every frame of its series; phase, real and imaginary frames matching the echoes become
        ``metadata["complex_components"]`` (arrays (n_echoes, k, j, i)), others are listed in
        ``metadata["set_aside"]``.
    echo_times_ms : sequence of float, optional
        Echo times in ms, reconciled with the DICOM ones
        (:func:`IronMapping.io.checks.reconcile_echo_times`).

    Returns
    -------
    MultiEchoImage
        Signal (n_echoes, k, j, i) in rescaled stored values, echo times in ms, IJK-to-RAS
        matrix, field strength (T) from MagneticFieldStrength when present, and metadata
        (sequence, rescale rule, readout, warnings).

    Raises
    ------
    EchoTimeError
        Echo times missing on some images only, or a given count that does not match the echoes.
    GeometryError
        Echoes with different slice counts, images of one echo with different size, orientation
        or pixel spacing, or pixel data that does not match the header.
    InputError
        Two images of one echo at the same slice position, or pixel data that cannot be decoded.
    """
    groups = {}
    for f in frames:
        groups.setdefault(_echo_key(f), []).append(f)
    keys = sorted(groups)
    uses_numbers = any(k[0] != "te" for k in keys)
    if uses_numbers and any(k[0] == "te" for k in keys):
        raise EchoTimeError("Some images of this series have an echo time and others do not; "
                            "the series cannot be split into echoes reliably.")
    f0 = frames[0]
    info = f0.info
    volumes, mats, names, found = [], [], [], []
    notes = []
    for n, key in enumerate(keys):
        label = (f"echo {n + 1} (TE {key[1]:g} ms)" if key[0] == "te" else
                 f"echo number {key[1]}")
        ordered = _order_echo(groups[key], f"{label} of series {f0.series_number}")
        mat, geo_notes = slice_stack_ijk_to_ras(
            ordered[0].row_dir, ordered[0].col_dir, ordered[0].pixel_spacing,
            np.stack([f.position for f in ordered]), ordered[0].slice_spacing)
        for note in geo_notes:
            if note not in notes:
                notes.append(note)
        volumes.append(_read_pixels(ordered))
        mats.append(mat)
        sn = sorted({f.series_number for f in ordered if f.series_number is not None})
        names.append(label + (f", series {'+'.join(map(str, sn))}" if sn else ""))
        found.append(float(ordered[0].echo_time) if key[0] == "te" else None)
    # the echoes must cover the same slices: compare slice counts first (clear message)
    counts = [v.shape[0] for v in volumes]
    if len(set(counts)) > 1:
        k = next(i for i, c in enumerate(counts) if c != counts[0])
        raise GeometryError(
            f"{names[k]} has {counts[k]} slices but {names[0]} has {counts[0]}. The series is "
            "incomplete or mixes acquisitions: re-export the whole series from the scanner or "
            "PACS.")
    te_tag = f0.te_tag
    where = f"DICOM {te_tag}"
    use_tes, source = reconcile_echo_times(found if not uses_numbers else None,
                                           echo_times_ms, where)
    looked = [f"DICOM {te_tag} of {len(frames)} images (e.g. {f0.path})"]
    if use_tes is None:
        use_tes = [None] * len(volumes)
    elif len(use_tes) != len(volumes):
        raise EchoTimeError(f"{len(use_tes)} echo times were given for {len(volumes)} echoes "
                            "(grouped by EchoNumbers).")
    field_notes = []
    metadata = {
        "source_format": "dicom-enhanced" if f0.frame is not None else "dicom",
        "source_paths": sorted({f.path for f in frames}),
        "echo_time_source": source if use_tes[0] is not None else None,
        "manufacturer": info["manufacturer"],
        "model": info["model"],
        "series_description": f0.description or None,
        "series_number": f0.series_number,
        "series_instance_uids": sorted({f.series_uid for f in frames}),
        "study_instance_uid": info["study_uid"] or None,
        "scanning_sequence": info["scanning_sequence"],
        "sequence_variant": info["sequence_variant"],
        "echo_pulse_sequence": info["echo_pulse_sequence"],
        "sequence_name": info["sequence_name"],
        "protocol_name": info["protocol_name"],
        "repetition_time_ms": info["repetition_time_ms"],
        "flip_angle_deg": info["flip_angle_deg"],
        "receive_coil": info["receive_coil"],
        "acquisition_type": info["acquisition_type"],
        "rescale": ("Philips floating point: (stored x RescaleSlope + RescaleIntercept) / "
                    "(RescaleSlope x ScaleSlope (2005,100E))" if f0.philips_scale else
                    "stored x RescaleSlope + RescaleIntercept"),
        "warnings": notes + field_notes,
    }
    field_t = field_strength_from(info["field_strength"], metadata["warnings"])
    metadata["field_strength_source"] = (
        "from DICOM (MagneticFieldStrength 0018,0087)" if field_t is not None else None)
    if info.get("readout") and len(volumes) > 1:
        metadata["readout"] = info["readout"]
        metadata["readout_source"] = ("from the Siemens protocol (ucReadOutMode in the CSA "
                                      "series header 0029,1020)")
    comps, aside = _components(series_frames or [], keys, [v.shape[0] for v in volumes],
                               groups)
    metadata["set_aside"] = aside
    if comps:
        metadata["complex_components"] = comps
        metadata["complex_components_info"] = (
            "Arrays [echo, k, j, i] in echo order on the magnitude grid, rescaled stored "
            "values (phase not converted to radians).")
    quantity = quantity_from_sequence(info["scanning_sequence"], info["echo_pulse_sequence"])
    return stack_echoes(volumes, use_tes, mats, quantity=quantity, field_strength_t=field_t,
                        metadata=metadata, names=names, looked_in=looked)


def _components(series_frames, keys, counts, mag_groups):
    """Phase/real/imaginary arrays matching the magnitude echoes and slices, plus a summary."""
    by_comp = {}
    for f in series_frames:
        if f.component != "magnitude":
            by_comp.setdefault(f.component, []).append(f)
    comps, aside = {}, []
    for comp, cframes in by_comp.items():
        aside.append({"component": comp, "images": len(cframes),
                      "series": sorted({str(f.series_number) for f in cframes})})
        groups = {}
        for f in cframes:
            groups.setdefault(_echo_key(f), []).append(f)
        if sorted(groups) != keys:
            aside[-1]["kept"] = False
            continue
        vols = []
        for key, count in zip(keys, counts):
            try:
                ordered = _order_echo(groups[key], f"{comp} images")
            except (InputError, GeometryError):
                break
            mag_pos = np.stack([f.position for f in _order_echo(mag_groups[key], "echo")])
            pos = np.stack([f.position for f in ordered])
            if len(ordered) != count or np.abs(pos - mag_pos).max() > 1e-3:
                break
            vols.append(_read_pixels(ordered))
        if len(vols) == len(keys):
            comps[comp] = np.stack(vols)
            aside[-1]["kept"] = True
        else:
            aside[-1]["kept"] = False
    return comps, aside
