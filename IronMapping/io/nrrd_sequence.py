"""NRRD files: Slicer volume sequences (.seq.nrrd) and plain scalar volumes.

A Slicer volume sequence file (vtkMRMLVolumeSequenceStorageNode) is one NRRD with three
``domain`` axes and one ``list`` axis. Slicer 5 writes the list axis last (``kinds: domain
domain domain list``, custom keys ``axis 3 index values:=...``), older versions first (``list
domain domain domain``, ``axis 0 ...``); both are read. Index values are URL-encoded and
separated by spaces. Sequence node attributes are stored as further ``key:=value`` pairs,
e.g. ``MultiVolume.FrameLabels:=6.1,12.2`` from Slicer's MultiVolumeImporter.

Where the echo times come from, in this order:
1. ``MultiVolume.FrameLabels`` when ``MultiVolume.FrameIdentifyingDICOMTagName`` is EchoTime
   (or absent), unit from ``MultiVolume.FrameIdentifyingDICOMTagUnits`` (ms if absent);
2. the list axis index values when the axis label names the echo time ("echo time", "TE",
   "EchoTime"), unit from the axis ``units`` field (ms if absent);
3. ``echo_times_ms`` given by the caller. Index values of an axis labelled "frame" or "time"
   are frame numbers, never echo times.
"""

from __future__ import annotations

import bz2
import gzip
import os
import re
import urllib.parse
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

_TYPES = {
    "int8": "i1", "signed char": "i1", "int8_t": "i1",
    "uchar": "u1", "unsigned char": "u1", "uint8": "u1", "uint8_t": "u1",
    "short": "i2", "short int": "i2", "signed short": "i2", "signed short int": "i2",
    "int16": "i2", "int16_t": "i2",
    "ushort": "u2", "unsigned short": "u2", "unsigned short int": "u2", "uint16": "u2",
    "uint16_t": "u2",
    "int": "i4", "signed int": "i4", "int32": "i4", "int32_t": "i4",
    "uint": "u4", "unsigned int": "u4", "uint32": "u4", "uint32_t": "u4",
    "longlong": "i8", "long long": "i8", "long long int": "i8", "signed long long": "i8",
    "signed long long int": "i8", "int64": "i8", "int64_t": "i8",
    "ulonglong": "u8", "unsigned long long": "u8", "unsigned long long int": "u8",
    "uint64": "u8", "uint64_t": "u8",
    "float": "f4", "double": "f8",
}

# NRRD "space" -> diagonal that takes its coordinates to RAS
_SPACES = {
    "right-anterior-superior": (1, 1, 1), "ras": (1, 1, 1),
    "left-anterior-superior": (-1, 1, 1), "las": (-1, 1, 1),
    "left-posterior-superior": (-1, -1, 1), "lps": (-1, -1, 1),
}

_ECHO_LABEL = re.compile(r"^\s*(echo[\s_-]*times?|te|echotime|effective[\s_-]*echo[\s_-]*time)"
                         r"\s*(\(.*\))?\s*$", re.IGNORECASE)


@dataclass
class NrrdFile:
    """A parsed NRRD file. ``data`` is in C order: NRRD's fastest axis is the last array axis."""

    path: str
    fields: dict
    keys: dict
    data: np.ndarray
    notes: list = field(default_factory=list)


def _vector(text):
    text = text.strip()
    if text == "none":
        return None
    return [float(v) for v in text.strip("()").split(",")]


def _split_vectors(text):
    return re.findall(r"\([^)]*\)|none", text)


def _quoted(text):
    return re.findall(r'"((?:[^"\\]|\\.)*)"', text)


def read_nrrd_header(path):
    """The header of an NRRD/NHDR file.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    fields : dict
        Lower-case standard field names to their text.
    keys : dict
        The ``key:=value`` pairs verbatim.
    data_offset : int
        Byte offset of attached data.

    Raises
    ------
    InputError
        When the file does not start with "NRRD".
    """
    with open(path, "rb") as fh:
        magic = fh.readline()
        if not magic.startswith(b"NRRD"):
            raise InputError(f"{path} is not an NRRD file (it does not start with 'NRRD').")
        fields, keys = {}, {}
        while True:
            raw = fh.readline()
            if not raw:
                break
            line = raw.decode("latin-1").rstrip("\r\n")
            if line == "":
                break
            if line.startswith("#"):
                continue
            if ":=" in line:
                k, v = line.split(":=", 1)
                keys[k] = v
            elif ": " in line:
                k, v = line.split(": ", 1)
                fields[k.strip().lower()] = v.strip()
        offset = fh.tell()
    return fields, keys, offset


def read_nrrd(path) -> NrrdFile:
    """Read an NRRD file (attached or single detached data file; raw, gzip, bzip2 or ascii).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    NrrdFile
        ``data`` with the NRRD sizes reversed (C order).

    Raises
    ------
    InputError
        For an unknown type, multi-file data, an unsupported encoding or truncated data.
    """
    path = os.fspath(path)
    fields, keys, offset = read_nrrd_header(path)
    try:
        dtype = np.dtype(_TYPES[fields["type"].lower()])
        sizes = [int(s) for s in fields["sizes"].split()]
    except KeyError as exc:
        raise InputError(f"{path}: NRRD header lacks or has an unknown {exc} field.") from None
    endian = fields.get("endian", "little").lower()
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")
    encoding = fields.get("encoding", "raw").lower()
    datafile = fields.get("data file", fields.get("datafile"))
    if datafile:
        if datafile.startswith("LIST") or "%" in datafile:
            raise InputError(f"{path}: multi-file NRRD data ('{datafile}') is not supported; "
                             "save the volume as a single .nrrd file.")
        data_path = datafile if os.path.isabs(datafile) else \
            os.path.join(os.path.dirname(path), datafile)
        with open(data_path, "rb") as fh:
            blob = fh.read()
    else:
        with open(path, "rb") as fh:
            fh.seek(offset)
            blob = fh.read()
    n = int(np.prod(sizes))
    if encoding in ("gzip", "gz"):
        blob = gzip.decompress(blob)
    elif encoding in ("bzip2", "bz2"):
        blob = bz2.decompress(blob)
    elif encoding in ("ascii", "text", "txt"):
        values = np.array(blob.decode("latin-1").split(), dtype=np.float64)
        data = values[:n].astype(dtype.newbyteorder("="))
        return NrrdFile(path, fields, keys, data.reshape(sizes[::-1]))
    elif encoding != "raw":
        raise InputError(f"{path}: NRRD encoding '{encoding}' is not supported (use raw or "
                         "gzip).")
    skip = int(fields.get("byte skip", fields.get("byteskip", "0")))
    if skip == -1:
        blob = blob[len(blob) - n * dtype.itemsize:]
    elif skip > 0:
        blob = blob[skip:]
    if len(blob) < n * dtype.itemsize:
        raise InputError(f"{path}: NRRD data is shorter than the header says "
                         f"({len(blob)} bytes for {sizes}); the file is truncated.")
    data = np.frombuffer(blob, dtype=dtype, count=n).reshape(sizes[::-1])
    return NrrdFile(path, fields, keys, data)


def _ras_geometry(nrrd: NrrdFile, domain_axes):
    f = nrrd.fields
    space = f.get("space", "").lower()
    ijk_to_ras = np.eye(4)
    if "space directions" in f:
        if space not in _SPACES:
            raise InputError(
                f"{nrrd.path}: NRRD space '{space}' is not supported; expected "
                "right-anterior-superior, left-anterior-superior or left-posterior-superior.")
        flip = np.array(_SPACES[space], dtype=np.float64)
        dirs = _split_vectors(f["space directions"])
        for col, ax in enumerate(domain_axes):
            vec = _vector(dirs[ax])
            if vec is None:
                raise InputError(f"{nrrd.path}: spatial axis {ax} has no space direction.")
            ijk_to_ras[:3, col] = flip * np.asarray(vec[:3])
        origin = _vector(f.get("space origin", "(0,0,0)"))
        ijk_to_ras[:3, 3] = flip * np.asarray(origin[:3])
    else:
        spacings = f.get("spacings", "").split()
        for col, ax in enumerate(domain_axes):
            try:
                ijk_to_ras[col, col] = float(spacings[ax])
            except (IndexError, ValueError):
                pass
        nrrd.notes.append(f"{os.path.basename(nrrd.path)} has no space directions; an "
                          "identity orientation at the origin was assumed.")
    return ijk_to_ras


@dataclass
class VolumeSequence:
    """Frames of a NRRD file, [frame, k, j, i], with what the header says about them."""

    frames: np.ndarray
    ijk_to_ras: np.ndarray
    index_values: list
    axis_label: str
    axis_unit: str
    keys: dict
    notes: list


def read_volume_sequence(path) -> VolumeSequence:
    """Read a Slicer .seq.nrrd (or any 3-D/4-D scalar NRRD) into frames.

    A 3-D NRRD gives one frame. A vector-valued list axis beside the sequence axis is refused.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    VolumeSequence
        ``frames`` of shape (n_frames, k, j, i), ``ijk_to_ras`` (4, 4) in mm, the sequence
        axis label, unit and index values, the header keys and notes.

    Raises
    ------
    InputError
        When the header has not 3 spatial axes and at most one sequence axis, or an unsupported
        space.
    """
    nrrd = read_nrrd(path)
    sizes = [int(s) for s in nrrd.fields["sizes"].split()]
    dim = len(sizes)
    kinds = nrrd.fields.get("kinds", " ".join(["domain"] * dim)).split()
    dirs = _split_vectors(nrrd.fields.get("space directions", ""))
    if dirs and len(dirs) == dim:
        domain_axes = [a for a in range(dim) if dirs[a] != "none"]
    else:
        domain_axes = [a for a in range(dim) if kinds[a].lower() in ("domain", "space")]
    other = [a for a in range(dim) if a not in domain_axes]
    if len(domain_axes) == 2 and dim == 2:
        domain_axes, other = [0, 1], []
    if len(domain_axes) != 3 or len(other) > 1:
        raise InputError(
            f"{path}: expected 3 spatial axes and at most one sequence axis; the header has "
            f"sizes {sizes} with kinds {kinds}. Save the echoes as a Slicer volume sequence "
            "(.seq.nrrd) of scalar volumes.")
    ijk_to_ras = _ras_geometry(nrrd, domain_axes)
    data = nrrd.data
    if other:
        list_axis = other[0]
        data = np.moveaxis(data, dim - 1 - list_axis, 0)
    else:
        list_axis = None
        data = data[None]
    labels = _quoted(nrrd.fields.get("labels", ""))
    units = _quoted(nrrd.fields.get("units", ""))
    label = labels[list_axis] if list_axis is not None and len(labels) > list_axis else ""
    unit = units[list_axis] if list_axis is not None and len(units) > list_axis else ""
    index_values = []
    for key, value in nrrd.keys.items():
        m = re.fullmatch(r"axis (\d+) index values", key)
        if m and list_axis is not None and int(m.group(1)) == list_axis:
            index_values = [urllib.parse.unquote(v) for v in value.split()]
    extra = {k: v for k, v in nrrd.keys.items()}
    return VolumeSequence(frames=data, ijk_to_ras=ijk_to_ras, index_values=index_values,
                          axis_label=label, axis_unit=unit, keys=extra, notes=nrrd.notes)


def _unit_factor(unit, path, what):
    u = (unit or "ms").strip().lower()
    if u in ("ms", "msec", "millisecond", "milliseconds"):
        return 1.0
    if u in ("s", "sec", "second", "seconds"):
        return 1000.0
    if u in ("us", "usec", "microsecond", "microseconds"):
        return 1e-3
    raise InputError(f"{path}: unit '{unit}' of {what} is not a time unit (ms or s).")


def sequence_echo_times(seq: VolumeSequence, path):
    """Echo times recorded in a volume sequence, and where they were looked for.

    Parameters
    ----------
    seq : VolumeSequence
        Notes are appended when frame labels do not match the frames.
    path : str or os.PathLike
        The file, for messages.

    Returns
    -------
    echo_times_ms : list of float or None
        In ms, one per frame; None when not recorded.
    source : str or None
        Where they came from.
    looked : list of str
        The places looked in.

    Raises
    ------
    InputError
        When frame labels are not numbers, or a unit is not a time unit.
    """
    looked = []
    name = os.path.basename(os.fspath(path))
    labels = seq.keys.get("MultiVolume.FrameLabels")
    tag = seq.keys.get("MultiVolume.FrameIdentifyingDICOMTagName", "EchoTime")
    looked.append(f"'MultiVolume.FrameLabels' key of {name}")
    if labels is not None and tag.replace(" ", "").lower() in ("echotime", "effectiveechotime"):
        try:
            values = [float(v) for v in re.split(r"[,\s]+", labels.strip()) if v]
        except ValueError:
            raise InputError(f"{path}: MultiVolume.FrameLabels '{labels}' are not numbers.")
        if len(values) == seq.frames.shape[0]:
            factor = _unit_factor(seq.keys.get("MultiVolume.FrameIdentifyingDICOMTagUnits"),
                                  path, "MultiVolume.FrameLabels")
            return [v * factor for v in values], f"MultiVolume.FrameLabels in {name}", looked
        seq.notes.append(f"MultiVolume.FrameLabels has {len(values)} values for "
                         f"{seq.frames.shape[0]} frames and was ignored.")
    looked.append(f"index values of the sequence axis of {name} (label "
                  f"'{seq.axis_label or 'frame'}': only a label naming the echo time counts)")
    if seq.index_values and _ECHO_LABEL.match(seq.axis_label or ""):
        try:
            values = [float(v) for v in seq.index_values]
        except ValueError:
            values = None
        if values is not None and len(values) == seq.frames.shape[0]:
            factor = _unit_factor(seq.axis_unit, path, "the sequence index")
            return ([v * factor for v in values],
                    f"index values of axis '{seq.axis_label}' in {name}", looked)
    return None, None, looked
