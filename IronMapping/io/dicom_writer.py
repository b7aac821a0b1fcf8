"""Write a MultiEchoImage as synthetic MR DICOM (classic or enhanced multi-frame).

Used by the tests to prove the DICOM reader round-trips echo times, geometry and values,
and by demos that need a DICOM folder without patient data. The files say they are
synthetic (PatientName "IronMapping^Synthetic", ContentQualification RESEARCH) and carry
no real patient information.

Pixel values are stored as unsigned 16-bit integers with a RescaleSlope/Intercept chosen
per image (classic) or per frame (enhanced), so the values read back equal
``WrittenSeries.expected`` (the input rounded to the stored grid), not the input exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import GeometryError, InputError
from .geometry import LPS_TO_RAS

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
_COMPONENT_TOKEN = {"magnitude": "M", "phase": "P", "real": "R", "imaginary": "I"}


@dataclass
class WrittenSeries:
    """What :func:`write_multiecho_dicom` wrote.

    Attributes
    ----------
    paths : list of str
    series_uids : list of str
        One, or one per echo with ``series_per_echo``.
    expected : dict of str to float32 ndarray, shape (n_echoes, k, j, i)
        Per component, the values a correct reader returns (input quantised to the stored
        16-bit grid).
    """

    paths: list = field(default_factory=list)
    series_uids: list = field(default_factory=list)
    expected: dict = field(default_factory=dict)


def _ds(x, digits=10):
    """A DICOM DS string (at most 16 characters) and the float it stands for."""
    for d in range(digits, 3, -1):
        s = f"{x:.{d}g}"
        if len(s) <= 16:
            return s, float(s)
    raise ValueError(x)


def _quantise(img):
    """uint16 stored values, slope/intercept strings and the decoded values of one image."""
    lo, hi = float(np.min(img)), float(np.max(img))
    b_str, b = _ds(lo)
    span = hi - b
    m_str, m = _ds(span / 65535.0 if span > 0 else 1.0)
    stored = np.clip(np.round((img.astype(np.float64) - b) / m), 0, 65535).astype(np.uint16)
    decoded = (stored.astype(np.float32) * np.float32(m) + np.float32(b)).astype(np.float32)
    return stored, m_str, b_str, decoded


def _geometry(ijk_to_ras):
    lps = LPS_TO_RAS @ np.asarray(ijk_to_ras, dtype=np.float64)
    col_i, col_j = lps[:3, 0], lps[:3, 1]
    sp_i, sp_j = np.linalg.norm(col_i), np.linalg.norm(col_j)
    row_dir, col_dir = col_i / sp_i, col_j / sp_j
    if abs(row_dir @ col_dir) > 1e-6:
        raise GeometryError("DICOM needs orthogonal row and column directions; the i and j "
                            "axes of this image are not orthogonal.")
    iop = [_ds(v, 12)[0] for v in np.concatenate([row_dir, col_dir])]
    spacing = [_ds(sp_j)[0], _ds(sp_i)[0]]
    step = lps[:3, 2]
    return lps, iop, spacing, step


def _base_dataset(sop_class, image, study_uid, for_uid, series_uid, series_number,
                  description, scanning_sequence, manufacturer, protocol=None):
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.PatientName = "IronMapping^Synthetic"
    ds.PatientID = "IRONMAPPING-SYNTHETIC"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = for_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.ProtocolName = protocol or description
    ds.Manufacturer = manufacturer
    ds.MagneticFieldStrength = _ds(image.field_strength_t or 1.5)[0]
    ds.ScanningSequence = scanning_sequence
    ds.SequenceVariant = "SP" if scanning_sequence == "GR" else "NONE"
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = "200"
    ds.FlipAngle = "20"
    ds.PatientPosition = "HFS"
    ds.Rows, ds.Columns = int(image.shape[1]), int(image.shape[2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def write_multiecho_dicom(image, folder, *, enhanced=False, series_per_echo=False,
                          components=None, series_number=100,
                          series_description="IronMapping synthetic multi-echo",
                          scanning_sequence=None, manufacturer="IronMapping synthetic",
                          study_uid=None, frame_of_reference_uid=None, shuffle_seed=0):
    """Write ``image`` (a MultiEchoImage) as MR DICOM files into ``folder``.

    Parameters
    ----------
    image : MultiEchoImage
        Magnitude echoes and geometry to write (i and j axes must be orthogonal).
    folder : str
        Created if needed; existing files are never overwritten (new names are used).
    enhanced : bool
        One enhanced multi-frame MR file (per-frame functional groups) instead of one
        classic file per image.
    series_per_echo : bool
        Classic only: a separate series per echo (same study and frame of reference).
    components : dict, optional
        Extra images {"phase"|"real"|"imaginary": array [echo, k, j, i]} written into the
        same series, marked as such (ImageType / ComplexImageComponent).
    series_number : int
        SeriesNumber (the next numbers for further series with ``series_per_echo``).
    series_description : str
        SeriesDescription (and ProtocolName of classic files).
    scanning_sequence : str, optional
        "GR" or "SE"; defaults to "SE" when ``image.quantity`` is "T2", else "GR".
    manufacturer : str
        Manufacturer.
    study_uid, frame_of_reference_uid : str, optional
        StudyInstanceUID and FrameOfReferenceUID; new UIDs when None.
    shuffle_seed : int or None
        Shuffle file names / frame order so that readers cannot rely on them (None: keep
        echo-interleaved order).

    Returns
    -------
    WrittenSeries

    Raises
    ------
    InputError
        For ``series_per_echo`` with ``enhanced``, or an unknown or misshapen component.
    GeometryError
        When the i and j axes are not orthogonal.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    if enhanced and series_per_echo:
        raise InputError("series_per_echo applies to classic DICOM only.")
    os.makedirs(folder, exist_ok=True)
    scanning_sequence = scanning_sequence or ("SE" if image.quantity == "T2" else "GR")
    study_uid = study_uid or generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    lps, iop, spacing, step = _geometry(image.ijk_to_ras)
    n_echo, n_k = image.n_echoes, image.shape[0]
    thickness = _ds(float(np.linalg.norm(step)))[0]
    layers = [("magnitude", np.asarray(image.signal))]
    for comp, arr in (components or {}).items():
        if comp not in ("phase", "real", "imaginary"):
            raise InputError(f"Unknown component {comp!r}; use phase, real or imaginary.")
        arr = np.asarray(arr, dtype=np.float32)
        if arr.shape != image.signal.shape:
            raise InputError(f"{comp} has shape {arr.shape}, the magnitude {image.signal.shape}.")
        layers.append((comp, arr))
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    out = WrittenSeries()
    out.expected = {c: np.empty(a.shape, np.float32) for c, a in layers}

    def ipp(k):
        return [_ds(v, 12)[0] for v in lps[:3, 3] + k * step]

    if not enhanced:
        series_uids = [generate_uid() for _ in range(n_echo if series_per_echo else 1)]
        out.series_uids = series_uids
        jobs = [(c, e, k) for c, _ in layers for k in range(n_k) for e in range(n_echo)]
        names = np.arange(len(jobs))
        if rng is not None:
            rng.shuffle(names)
        for (comp, e, k), name in zip(jobs, names):
            arr = dict(layers)[comp]
            s_idx = e if series_per_echo else 0
            ds = _base_dataset(MR_IMAGE_STORAGE, image, study_uid, for_uid, series_uids[s_idx],
                               series_number + s_idx, series_description + (
                                   f" e{e + 1}" if series_per_echo else ""),
                               scanning_sequence, manufacturer, protocol=series_description)
            ds.ImageType = ["ORIGINAL", "PRIMARY", _COMPONENT_TOKEN[comp], "ND"]
            ds.InstanceNumber = k * n_echo + e + 1
            ds.EchoTime = _ds(float(image.echo_times_ms[e]))[0]
            ds.EchoNumbers = e + 1
            ds.ImagePositionPatient = ipp(k)
            ds.ImageOrientationPatient = iop
            ds.PixelSpacing = spacing
            ds.SliceThickness = thickness
            ds.SpacingBetweenSlices = thickness
            stored, m, b, decoded = _quantise(arr[e, k])
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = m, b, "US"
            ds.PixelData = stored.tobytes()
            out.expected[comp][e, k] = decoded
            path = _free_path(folder, f"IM{int(name) + 1:05d}.dcm")
            _save(ds, path)
            out.paths.append(path)
        return out

    series_uid = generate_uid()
    out.series_uids = [series_uid]
    ds = _base_dataset(ENHANCED_MR_IMAGE_STORAGE, image, study_uid, for_uid, series_uid,
                       series_number, series_description, scanning_sequence, manufacturer)
    del ds.ScanningSequence, ds.SequenceVariant, ds.RepetitionTime, ds.FlipAngle
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.EchoPulseSequence = "SPIN" if scanning_sequence == "SE" else "GRADIENT"
    ds.ContentQualification = "RESEARCH"
    ds.InstanceNumber = 1
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = spacing
    pm.SliceThickness = thickness
    pm.SpacingBetweenSlices = thickness
    shared.PixelMeasuresSequence = Sequence([pm])
    po = Dataset()
    po.ImageOrientationPatient = iop
    shared.PlaneOrientationSequence = Sequence([po])
    timing = Dataset()
    timing.RepetitionTime = "200"
    timing.FlipAngle = "20"
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    jobs = [(c, e, k) for c, _ in layers for k in range(n_k) for e in range(n_echo)]
    if rng is not None:
        rng.shuffle(jobs)
    per_frame, pixels = [], []
    for comp, e, k in jobs:
        arr = dict(layers)[comp]
        item = Dataset()
        fc = Dataset()
        fc.StackID = "1"
        fc.InStackPositionNumber = k + 1
        fc.DimensionIndexValues = [e + 1, k + 1]
        item.FrameContentSequence = Sequence([fc])
        pp = Dataset()
        pp.ImagePositionPatient = ipp(k)
        item.PlanePositionSequence = Sequence([pp])
        echo = Dataset()
        echo.EffectiveEchoTime = float(image.echo_times_ms[e])
        item.MREchoSequence = Sequence([echo])
        ft = Dataset()
        ft.FrameType = ["ORIGINAL", "PRIMARY", _COMPONENT_TOKEN[comp], "NONE"]
        ft.ComplexImageComponent = comp.upper()
        ft.PixelPresentation = "MONOCHROME"
        ft.VolumetricProperties = "VOLUME"
        ft.VolumeBasedCalculationTechnique = "NONE"
        item.MRImageFrameTypeSequence = Sequence([ft])
        stored, m, b, decoded = _quantise(arr[e, k])
        pvt = Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = m, b, "US"
        item.PixelValueTransformationSequence = Sequence([pvt])
        per_frame.append(item)
        pixels.append(stored)
        out.expected[comp][e, k] = decoded
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.NumberOfFrames = len(per_frame)
    ds.PixelData = np.stack(pixels).tobytes()
    path = _free_path(folder, "ENHANCED.dcm")
    _save(ds, path)
    out.paths.append(path)
    return out


def _save(ds, path):
    """Write ``ds`` as a standard DICOM file (preamble, file meta, the meta's transfer syntax).

    pydicom 3 says so with ``enforce_file_format=True``; pydicom 2 (bundled with Slicer 5.8 and
    5.10) with ``write_like_original=False`` and the encoding set on the dataset.
    """
    import pydicom

    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
        return
    syntax = ds.file_meta.TransferSyntaxUID
    ds.is_little_endian, ds.is_implicit_VR = syntax.is_little_endian, syntax.is_implicit_VR
    ds.save_as(path, write_like_original=False)


def _free_path(folder, name):
    path = os.path.join(folder, name)
    stem, ext = os.path.splitext(name)
    n = 1
    while os.path.exists(path):
        path = os.path.join(folder, f"{stem}_{n}{ext}")
        n += 1
    return path
