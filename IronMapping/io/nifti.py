"""NIfTI echoes with dcm2niix/BIDS JSON sidecars, and other single-volume files.

Layouts read:

- one NIfTI per echo (dcm2niix ``..._e1.nii.gz``, ``..._e3.nii.gz``, ...; gaps in the echo
  numbering are fine), each with a sidecar ``<same name>.json`` whose ``EchoTime`` is in
  seconds;
- one 4-D NIfTI holding all echoes with a sidecar whose ``EchoTime`` is a list (seconds);
- per-echo 4-D files holding magnitude, real and imaginary volumes (GE, as in the UKRIN-MAPS
  kidney data): the magnitude volume is recognised because it equals sqrt(real^2 + imag^2);
  real and imaginary are set aside in ``metadata["complex_components"]``;
- a list of scalar volumes (NIfTI, NRRD, MetaImage, ...) with ``echo_times_ms`` typed in.

Phase, real and imaginary files (sidecar ``ImageType`` containing P/PHASE, REAL, IMAGINARY, or
dcm2niix suffixes ``_ph``, ``_real``, ``_imaginary``) are never fitted; when they match the
magnitude echoes they are kept in ``metadata["complex_components"]``.

Pixel data and geometry are read with SimpleITK (as Slicer does), so the IJK-to-RAS matrix is
the file's own (for NIfTI: the sform/qform affine, which is already RAS).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import struct
import zlib

import numpy as np

from ..errors import EchoTimeError, InputError
from .checks import (field_strength_from, quantity_from_sequence, reconcile_echo_times,
                     stack_echoes)
from .geometry import sitk_ijk_to_ras
from .metadata import readout_from_text

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_ECHO_SUFFIX = re.compile(r"_e(\d+)(?=(_ph|_real|_imaginary|_imag|_mag)?$)", re.IGNORECASE)
_COMPONENT_SUFFIX = {"_ph": "phase", "_phase": "phase", "_real": "real",
                     "_imaginary": "imaginary", "_imag": "imaginary"}
# Magnitude must equal hypot(real, imag) to within this median relative difference.
_MRI_TOLERANCE = 0.05
# NIfTI datatype codes that can hold NaN or infinity: float32, float64, float128.
_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}
_CHUNK = 1 << 22


def strip_suffix(path):
    """File name without its image extension (.nii.gz, .nii, .nrrd, ...).

    Parameters
    ----------
    path : str or os.PathLike
        An image file (the folder part is dropped).

    Returns
    -------
    str
        The base name without .seq.nrrd, .nii.gz, .nii, .nrrd, .nhdr, .mha or .mhd (any other
        extension: the last one removed).
    """
    name = os.path.basename(os.fspath(path))
    low = name.lower()
    for suf in (".seq.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if low.endswith(suf):
            return name[: -len(suf)]
    return os.path.splitext(name)[0]


def is_nifti(path) -> bool:
    """Whether ``path`` names a NIfTI file (.nii or .nii.gz, any case).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    bool
    """
    return os.fspath(path).lower().endswith(NIFTI_SUFFIXES)


def sidecar_path(path):
    """The JSON sidecar beside an image file, or None.

    Parameters
    ----------
    path : str or os.PathLike
        An image file; its sidecar is ``<name without extension>.json`` in the same folder.

    Returns
    -------
    str or None
        The sidecar's path when that file exists.
    """
    cand = os.path.join(os.path.dirname(os.fspath(path)), strip_suffix(path) + ".json")
    return cand if os.path.isfile(cand) else None


def read_sidecar(path):
    """The parsed JSON sidecar of ``path`` (dict), or None when there is none.

    Parameters
    ----------
    path : str or os.PathLike
        An image file.

    Returns
    -------
    dict or None

    Raises
    ------
    InputError
        The sidecar is not readable JSON or does not hold a JSON object.
    """
    sc = sidecar_path(path)
    if sc is None:
        return None
    try:
        with open(sc, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError(f"The sidecar {sc} cannot be read as JSON ({exc}). Fix or remove it.")
    if not isinstance(data, dict):
        raise InputError(f"The sidecar {sc} does not hold a JSON object.")
    return data


def natural_key(path):
    """Sort key putting e2 before e10.

    Parameters
    ----------
    path : str or os.PathLike
        A file; only its base name is used, case-insensitively.

    Returns
    -------
    list of int and str
    """
    name = os.path.basename(os.fspath(path))
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


SIDECAR_READOUT_KEYS = ("ReadoutPolarity", "MultiEchoReadout", "GradientEchoReadout",
                        "ReadoutMode", "readout", "ucReadOutMode")
"""Sidecar keys read for the multi-echo readout (BIDS defines none; these are what converters or
users write). Text containing bipolar/alternating or monopolar/unipolar/flyback; for
``ucReadOutMode`` (Siemens protocol value) 1 monopolar, 2 bipolar."""


def sidecar_readout(sidecar):
    """'bipolar', 'monopolar' or None (not stated) from a JSON sidecar.

    Parameters
    ----------
    sidecar : dict or None
        Parsed sidecar; the keys of ``SIDECAR_READOUT_KEYS`` are read in that order.

    Returns
    -------
    str or None
    """
    for key in SIDECAR_READOUT_KEYS:
        value = (sidecar or {}).get(key)
        if value is None or isinstance(value, (dict, list)):
            continue
        if key == "ucReadOutMode" or isinstance(value, (int, float)):
            try:
                code = int(str(value), 0) if isinstance(value, str) else int(value)
            except ValueError:
                continue
            if key == "ucReadOutMode" and code in (1, 2):
                return "monopolar" if code == 1 else "bipolar"
            continue
        named = readout_from_text(value)
        if named is not None:
            return named
    return None


def component_of(path, sidecar) -> str:
    """'magnitude', 'phase', 'real' or 'imaginary' from the sidecar ImageType or file suffix.

    Parameters
    ----------
    path : str or os.PathLike
        The image file (dcm2niix suffixes ``_ph``, ``_phase``, ``_real``, ``_imaginary``,
        ``_imag``).
    sidecar : dict or None
        Its parsed sidecar; ``ImageType`` (P/PHASE, REAL/R, IMAGINARY/I) takes precedence.

    Returns
    -------
    str
        "magnitude" unless the sidecar or suffix says otherwise.
    """
    if sidecar:
        it = sidecar.get("ImageType") or []
        if isinstance(it, str):
            it = it.replace("\\", " ").split()
        tokens = {str(t).upper() for t in it}
        if tokens & {"P", "PHASE"}:
            return "phase"
        if tokens & {"REAL", "R"}:
            return "real"
        if tokens & {"IMAGINARY", "I"}:
            return "imaginary"
    stem = strip_suffix(path).lower()
    for suf, comp in _COMPONENT_SUFFIX.items():
        if stem.endswith(suf):
            return comp
    return "magnitude"


def sidecar_echo_times_ms(sidecar, notes, name):
    """Echo times in ms from a sidecar's EchoTime (seconds; scalar or list), or None.

    Values of 1 or more are taken as already in ms (BIDS says seconds; an echo time of a second
    or more is surely milliseconds), with a note.

    Parameters
    ----------
    sidecar : dict or None
        Parsed sidecar.
    notes : list of str
        Notes for the user; appended to.
    name : str
        File name for the note.

    Returns
    -------
    list of float or None
        Echo times in ms; None when the sidecar has no EchoTime.
    """
    if not sidecar or sidecar.get("EchoTime") is None:
        return None
    raw = sidecar["EchoTime"]
    values = [float(v) for v in (raw if isinstance(raw, (list, tuple)) else [raw])]
    if any(v >= 1.0 for v in values):
        # BIDS says seconds; an echo time of a second or more is surely milliseconds.
        notes.append(f"EchoTime in {name} ({', '.join(f'{v:g}' for v in values)}) looks like "
                     "milliseconds, not seconds as BIDS/dcm2niix write it; read as ms.")
        return values
    return [v * 1000.0 for v in values]


def read_image_info(path):
    """(number of volumes, spatial size) of an image file without reading its pixels.

    Parameters
    ----------
    path : str or os.PathLike
        An image file SimpleITK can read.

    Returns
    -------
    n_volumes : int
        Size of the 4th axis, 1 for 2-D and 3-D images.
    size : tuple of int
        Spatial size (i, j, k) as SimpleITK gives it.

    Raises
    ------
    InputError
        The file cannot be read as an image.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(os.fspath(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{path} cannot be read as an image ({str(exc).strip()[:200]}).")
    size = reader.GetSize()
    n_vol = size[3] if len(size) > 3 else 1
    return n_vol, tuple(size[:3])


def read_volumes(path):
    """Read an image file into volumes [n, k, j, i] float32 and its IJK-to-RAS (4x4).

    NIfTI files are also checked on their bytes (:func:`check_nifti_file`): a truncated file
    is refused and non-finite voxels become NaN.

    Parameters
    ----------
    path : str or os.PathLike
        A scalar 2-D, 3-D or 4-D image file.

    Returns
    -------
    volumes : ndarray of float32, (n_volumes, k, j, i)
        Stored values; a 2-D image gives (1, 1, j, i).
    ijk_to_ras : ndarray, (4, 4)
        The file's own geometry, in mm.

    Raises
    ------
    InputError
        Unreadable, truncated or corrupt file, vector pixels, or more than 4 dimensions.
    """
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(os.fspath(path))
    except RuntimeError as exc:
        raise InputError(f"{path} cannot be read as an image ({str(exc).strip()[:200]}).")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path} holds vector pixels ({img.GetNumberOfComponentsPerPixel()} "
                         "components); give one scalar volume per echo.")
    arr = np.asarray(sitk.GetArrayFromImage(img), dtype=np.float32)
    if is_nifti(path):
        # what ITK hides: a truncated file read as zeros, NaN/inf read as 0
        non_finite = check_nifti_file(path)
        if non_finite is not None and non_finite.size:
            flat = arr.reshape(-1)
            flat[non_finite[non_finite < flat.size]] = np.nan
    dim = img.GetDimension()
    if dim == 2:
        arr = arr[None, None]
    elif dim == 3:
        arr = arr[None]
    elif dim != 4:
        raise InputError(f"{path} is a {dim}-D image; expected 3-D (one echo) or 4-D.")
    return arr, sitk_ijk_to_ras(img)


def _nifti_header(head: bytes, path):
    """(dims, datatype, bitpix, vox_offset, byte order) of a NIfTI-1 or NIfTI-2 header."""
    for order in ("<", ">"):
        size = struct.unpack(order + "i", head[:4])[0] if len(head) >= 4 else 0
        if size == 348 and len(head) >= 348:
            dims = struct.unpack(order + "8h", head[40:56])
            datatype, bitpix = struct.unpack(order + "2h", head[70:74])
            offset = struct.unpack(order + "f", head[108:112])[0]
            return dims, datatype, bitpix, max(int(offset), 352), order
        if size == 540 and len(head) >= 540:
            datatype, bitpix = struct.unpack(order + "2h", head[12:16])
            dims = struct.unpack(order + "8q", head[16:80])
            offset = struct.unpack(order + "q", head[168:176])[0]
            return dims, datatype, bitpix, max(int(offset), 544), order
    raise InputError(f"{path} has no valid NIfTI header (it may be truncated or not a NIfTI "
                     "file). Copy it again from the scanner export or convert it again.")


def _truncated(path, expected, got):
    return InputError(
        f"{path} is truncated: its header describes {expected} bytes of voxel data but the "
        f"file holds only {max(got, 0)}. The copy or download was cut short; copy the file "
        "again from the source (or convert the DICOM again) before fitting.")


def _gzip_size_fits(path, needed: int) -> bool:
    """True when the gzip trailer (ISIZE: uncompressed length mod 2**32) says the file holds
    at least ``needed`` bytes (allowing up to 1 MB after the voxel data). A cut-short file
    ends in arbitrary bytes, so this check then fails and the stream is read to the end."""
    try:
        with open(path, "rb") as raw:
            raw.seek(-4, os.SEEK_END)
            isize = struct.unpack("<I", raw.read(4))[0]
    except OSError:
        return False
    return (isize - needed) % (1 << 32) < (1 << 20)


def check_nifti_file(path):
    """Refuse a truncated NIfTI and find its non-finite voxels, from the raw file.

    SimpleITK fills the missing part of a truncated file with zeros and reads NaN as 0 in
    some cases, so both are checked on the bytes themselves (``.nii`` or ``.nii.gz``, NIfTI-1
    or -2), streaming, without holding a second copy of the data.

    Parameters
    ----------
    path : str or os.PathLike
        A NIfTI file.

    Returns
    -------
    int64 array or None
        Flat indices (file order: x fastest, as ``sitk.GetArrayFromImage`` lays them out) of
        NaN or infinite voxels of a floating-point file; None when there are none.

    Raises
    ------
    InputError
        Truncated or corrupt file, naming it.
    """
    path = os.fspath(path)
    gz = path.lower().endswith(".gz")
    try:
        fh = gzip.open(path, "rb") if gz else open(path, "rb")
        with fh:
            head = fh.read(540)
            dims, datatype, bitpix, offset, order = _nifti_header(head, path)
            n_dim = int(dims[0])
            if not 1 <= n_dim <= 7:
                raise InputError(f"{path} has an invalid NIfTI header (dim[0] = {n_dim}).")
            n_vox = int(np.prod([max(int(d), 1) for d in dims[1:n_dim + 1]], dtype=np.int64))
            expected = n_vox * max(int(bitpix), 8) // 8
            dtype = _NIFTI_FLOAT_TYPES.get(int(datatype))
            if not gz:  # uncompressed: the size says it all, and the data can be mapped
                got = os.path.getsize(path) - offset
                if got < expected:
                    raise _truncated(path, expected, got)
                if dtype is None or expected == 0:
                    return None
                values = np.memmap(path, dtype=order + dtype, mode="r", offset=offset,
                                   shape=(expected // np.dtype(dtype).itemsize,))
                bad = np.flatnonzero(~np.isfinite(values))
                del values
                return bad if bad.size else None
            if dtype is None and _gzip_size_fits(path, offset + expected):
                return None  # nothing to look for in integer data, and the length is right
            fh.seek(0)
            skipped = len(fh.read(offset))
            if skipped < offset:
                raise _truncated(path, expected, 0)
            itemsize = 0 if dtype is None else np.dtype(dtype).itemsize
            bad, got, carry = [], 0, b""
            while got < expected:
                chunk = fh.read(min(_CHUNK, expected - got))
                if not chunk:
                    break
                if dtype is not None:
                    data = carry + chunk
                    usable = len(data) - len(data) % itemsize
                    values = np.frombuffer(data[:usable], dtype=order + dtype)
                    idx = np.flatnonzero(~np.isfinite(values))
                    if idx.size:
                        bad.append(idx + (got - len(carry)) // itemsize)
                    carry = data[usable:]
                got += len(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(
            f"{path} is truncated or its compression is damaged ({exc}). Copy the file again "
            "from the source (or convert the DICOM again) before fitting.") from None
    except OSError as exc:
        raise InputError(f"{path} cannot be read ({exc.strerror or exc}).") from None
    if got < expected:
        raise _truncated(path, expected, got)
    return np.concatenate(bad) if bad else None


def split_magnitude_real_imaginary(vols, name):
    """Find magnitude among 3 volumes that are magnitude, real and imaginary in some order.

    The magnitude is the non-negative volume equal to sqrt(real^2 + imag^2) of the two others
    within a median relative difference of 5 % over its brightest quarter. The two others keep
    their file order as real, then imaginary (GE writes magnitude, real, imaginary).

    Parameters
    ----------
    vols : ndarray, (n_volumes, k, j, i)
        The volumes of one file; anything but 3 volumes gives None.
    name : str
        The file's name (not used).

    Returns
    -------
    tuple or None
        (magnitude (k, j, i), {"real": ..., "imaginary": ...}, (index of magnitude, median
        relative difference)), or None when they are not.
    """
    if vols.shape[0] != 3:
        return None
    for m in range(3):
        mag = vols[m]
        if mag.min() < 0:
            continue
        a, b = (vols[x] for x in range(3) if x != m)
        strong = mag > np.percentile(mag, 75)
        if not strong.any():
            continue
        rel = np.median(np.abs(np.hypot(a[strong], b[strong]) - mag[strong]) / mag[strong])
        if rel < _MRI_TOLERANCE:
            return mag, {"real": a, "imaginary": b}, (m, float(rel))
    return None


class FileEntry:
    """One image file and what its sidecar says.

    Attributes
    ----------
    path, name : str
        The file and its base name.
    sidecar : dict or None
        The parsed JSON sidecar (NIfTI files only).
    component : str
        "magnitude", "phase", "real" or "imaginary" (:func:`component_of`).
    notes : list of str
        Notes about the sidecar for the user.
    echo_times : list of float or None
        Echo times in ms from the sidecar (:func:`sidecar_echo_times_ms`).
    echo_number : int or None
        From a dcm2niix ``_e<n>`` suffix.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.name = os.path.basename(self.path)
        self.sidecar = read_sidecar(self.path) if is_nifti(self.path) else None
        self.component = component_of(self.path, self.sidecar)
        self.notes = []
        self.echo_times = sidecar_echo_times_ms(self.sidecar, self.notes, self.name)
        m = _ECHO_SUFFIX.search(strip_suffix(self.path))
        self.echo_number = int(m.group(1)) if m else None

    def group_key(self):
        """Key of the acquisition a file belongs to: the sidecar's series number and description, or
        else the folder and the file stem without echo and component suffixes.
        """
        sc = self.sidecar or {}
        if sc.get("SeriesNumber") is not None:
            return ("series", str(sc.get("SeriesNumber")),
                    str(sc.get("SeriesDescription") or sc.get("ProtocolName") or ""))
        stem = _ECHO_SUFFIX.sub("", strip_suffix(self.path))
        for suf in _COMPONENT_SUFFIX:
            if stem.lower().endswith(suf):
                stem = stem[: -len(suf)]
        return ("stem", os.path.dirname(self.path), stem)


def describe_group(entries):
    """Name of a group of files for messages: "series <n> '<description>'", or the file stem.

    Parameters
    ----------
    entries : list of FileEntry
        Files of one group (:meth:`FileEntry.group_key`); the first sidecar found is used.

    Returns
    -------
    str
    """
    sc = next((e.sidecar for e in entries if e.sidecar), {}) or {}
    desc = sc.get("SeriesDescription") or sc.get("ProtocolName") or \
        entries[0].group_key()[2]
    num = sc.get("SeriesNumber")
    return (f"series {num} " if num is not None else "") + f"'{desc}'"


def load_files(entries, echo_times_ms=None, explicit=False, source_format="nifti"):
    """Build a MultiEchoImage from image files, one echo each (or one 4-D multi-echo file).

    Files with one recorded echo time each are sorted by it; otherwise the input order is the
    echo order. A 4-D file gives one echo per volume when its sidecar lists an echo time per
    volume (or, for a single file, ``echo_times_ms`` does); a 3-volume file without a list
    holds magnitude, real and imaginary (:func:`split_magnitude_real_imaginary`). Phase, real
    and imaginary files matching the echoes go to ``metadata["complex_components"]``.

    Parameters
    ----------
    entries : list of FileEntry
        Files in input order (for a folder: natural name order).
    echo_times_ms : sequence of float, optional
        Typed-in echo times (ms), one per magnitude echo in input order; must agree with
        sidecars where those exist.
    explicit : bool
        True when the caller listed the files; the message about missing echo times then also
        names the ``echo_times_ms`` argument.
    source_format : str
        Recorded as ``metadata["source_format"]`` ("nifti", "volume-files").

    Returns
    -------
    MultiEchoImage
        Signal (n_echoes, k, j, i), echo times in ms, the files' geometry, field strength (T)
        and readout from the sidecar when recorded.

    Raises
    ------
    InputError
        Only phase/real/imaginary files, or a file that cannot be read.
    EchoTimeError
        Echo times missing, or their count not matching the volumes (the message says where
        they were looked for).
    """
    mags = [e for e in entries if e.component == "magnitude"]
    others = [e for e in entries if e.component != "magnitude"]
    if echo_times_ms is None and mags and all(e.echo_times and len(e.echo_times) == 1
                                              for e in mags):
        # one echo per file, each with its recorded echo time: file order does not matter
        mags.sort(key=lambda e: e.echo_times[0])
    if not mags:
        raise InputError(
            "Only phase/real/imaginary images were found (" + ", ".join(e.name for e in
                                                                       entries[:4])
            + "); IronMapping fits magnitude images. Add the magnitude files.")
    volumes, tes, names, mats = [], [], [], []
    reals, imags = [], []
    notes, splits = [], []
    for e in mags:
        notes.extend(e.notes)
        vols, mat = read_volumes(e.path)
        n_vol = vols.shape[0]
        file_tes = e.echo_times
        if n_vol == 1:
            volumes.append(vols[0])
            tes.append(file_tes[0] if file_tes and len(file_tes) == 1 else None)
            if file_tes and len(file_tes) > 1:
                raise EchoTimeError(
                    f"{e.name} holds one volume but its sidecar lists {len(file_tes)} echo "
                    "times. Check that the sidecar belongs to this file.")
            names.append(e.name)
            mats.append(mat)
            reals.append(None)
            imags.append(None)
            continue
        if file_tes and len(file_tes) == n_vol:
            for v in range(n_vol):
                volumes.append(vols[v])
                tes.append(file_tes[v])
                names.append(f"{e.name} volume {v + 1}")
                mats.append(mat)
                reals.append(None)
                imags.append(None)
            continue
        split = split_magnitude_real_imaginary(vols, e.name)
        if split is not None and (not file_tes or len(file_tes) == 1):
            mag, parts, found_split = split
            splits.append((e.name,) + found_split)
            volumes.append(mag)
            tes.append(file_tes[0] if file_tes else None)
            names.append(e.name)
            mats.append(mat)
            reals.append(parts["real"])
            imags.append(parts["imaginary"])
            continue
        if not file_tes and len(mags) == 1 and echo_times_ms is not None \
                and len(echo_times_ms) == n_vol:
            for v in range(n_vol):
                volumes.append(vols[v])
                tes.append(None)
                names.append(f"{e.name} volume {v + 1}")
                mats.append(mat)
                reals.append(None)
                imags.append(None)
            continue
        where = f"its sidecar {strip_suffix(e.path)}.json" if e.sidecar else \
            "no sidecar was found"
        raise EchoTimeError(
            f"{e.name} holds {n_vol} volumes but {len(file_tes) if file_tes else 'no'} echo "
            f"times are known ({where}). Give one echo time per volume: a sidecar with "
            "\"EchoTime\": [t1, t2, ...] in seconds, or echo_times_ms=[...].")

    if splits:
        idx = sorted({m for _, m, _ in splits})
        rels = [r for _, _, r in splits]
        notes.append(
            f"{len(splits)} file(s) hold 3 volumes each (e.g. {splits[0][0]}); volume "
            f"{'/'.join(str(i) for i in idx)} was taken as the magnitude because it equals "
            f"sqrt(a^2 + b^2) of the other two (median difference {100 * min(rels):.1f}-"
            f"{100 * max(rels):.1f}%); the other two are kept as real and imaginary "
            "(in file order) in metadata['complex_components'].")
    looked = [f"\"EchoTime\" (seconds) in the JSON sidecar beside each file (e.g. "
              f"{strip_suffix(mags[0].path)}.json)"]
    found = tes if any(t is not None for t in tes) else None
    if found is not None and any(t is None for t in found) and echo_times_ms is None:
        missing = [names[k] for k, t in enumerate(found) if t is None]
        raise EchoTimeError(
            "No echo time known for " + ", ".join(missing[:6]) + "; looked in: " + looked[0]
            + ". Add the sidecars or give echo_times_ms=[...] (ms, one per echo in file "
            "order).")
    use_tes, source = reconcile_echo_times(found, echo_times_ms,
                                           "the JSON sidecars (EchoTime, s)")
    if use_tes is None:
        use_tes = [None] * len(volumes)
        source = None
    elif len(use_tes) != len(volumes):
        raise EchoTimeError(
            f"{len(use_tes)} echo times for {len(volumes)} echoes "
            f"({', '.join(names[:4])}{'...' if len(names) > 4 else ''}). Give one echo time "
            "per echo.")

    components = {}
    if any(r is not None for r in reals) and all(r is not None for r in reals):
        components["real"] = np.stack(reals).astype(np.float32)
        components["imaginary"] = np.stack(imags).astype(np.float32)
    components.update(_matching_component_files(others, use_tes, volumes[0].shape, notes))

    sc = next((e.sidecar for e in mags if e.sidecar), None) or {}
    notes_b0 = []
    metadata = {
        "source_format": source_format,
        "source_paths": [e.path for e in entries],
        "echo_time_source": source,
        "manufacturer": sc.get("Manufacturer"),
        "model": sc.get("ManufacturersModelName"),
        "series_description": sc.get("SeriesDescription") or sc.get("ProtocolName"),
        "series_number": sc.get("SeriesNumber"),
        "scanning_sequence": sc.get("ScanningSequence"),
        "sequence_name": sc.get("SequenceName") or sc.get("PulseSequenceDetails"),
        "repetition_time_ms": None if sc.get("RepetitionTime") is None
        else float(sc["RepetitionTime"]) * 1000.0,
        "flip_angle_deg": sc.get("FlipAngle"),
        "receive_coil": sc.get("ReceiveCoilName") or sc.get("CoilString"),
        "echo_numbers": [e.echo_number for e in mags],
        "set_aside": [{"file": e.path, "component": e.component} for e in others],
        "warnings": notes,
    }
    field_t = field_strength_from(sc.get("MagneticFieldStrength"), notes_b0)
    metadata["warnings"] += notes_b0
    metadata["field_strength_source"] = (
        "from the JSON sidecar (MagneticFieldStrength)" if field_t is not None else None)
    readout = sidecar_readout(sc)
    if readout and len(volumes) > 1:
        metadata["readout"] = readout
        metadata["readout_source"] = "from the JSON sidecar"
    if components:
        metadata["complex_components"] = components
        metadata["complex_components_info"] = (
            "Arrays [echo, k, j, i] in echo order, as stored (phase not converted to "
            "radians; real/imaginary on the magnitude's scale).")
    quantity = quantity_from_sequence(sc.get("ScanningSequence"))
    return stack_echoes(volumes, use_tes, mats, quantity=quantity, field_strength_t=field_t,
                        metadata=metadata, names=names,
                        looked_in=looked + (["the echo_times_ms argument"] if explicit else []))


def _matching_component_files(others, tes, shape, notes):
    """Phase/real/imaginary files whose echo times match the magnitude echoes, by component."""
    out = {}
    by_comp = {}
    for e in others:
        by_comp.setdefault(e.component, []).append(e)
    for comp, files in by_comp.items():
        if tes is None or any(t is None for t in tes):
            notes.append(f"{len(files)} {comp} file(s) set aside (echo times unknown).")
            continue
        found = {}
        for e in files:
            if e.echo_times and len(e.echo_times) == 1:
                found[round(e.echo_times[0], 3)] = e
        keys = [round(t, 3) for t in tes]
        if all(k in found for k in keys):
            arrs = []
            for k in keys:
                vols, _ = read_volumes(found[k].path)
                if vols.shape[1:] != shape:
                    break
                arrs.append(vols[0])
            if len(arrs) == len(keys):
                out[comp] = np.stack(arrs).astype(np.float32)
                continue
        notes.append(f"{len(files)} {comp} file(s) set aside; they do not match the "
                     "magnitude echoes one to one.")
    return out
