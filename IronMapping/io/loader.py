"""``load_multiecho``: one entry point for every file layout a user may have.

It finds the candidate multi-echo series among the given paths (DICOM series, NIfTI groups,
NRRD volume sequences), picks the one asked for (``series=``) or the only usable one, and
returns a :class:`IronMapping.image.MultiEchoImage`.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..errors import EchoTimeError, InputError
from ..image import MultiEchoImage
from . import dicom, nifti
from .checks import field_strength_from, reconcile_echo_times, stack_echoes
from .nrrd_sequence import read_volume_sequence, sequence_echo_times

_NRRD = (".nrrd", ".nhdr")


def _is_nrrd(path):
    return path.lower().endswith(_NRRD)


def _is_image_file(path):
    low = path.lower()
    return nifti.is_nifti(low) or _is_nrrd(low) or low.endswith((".mha", ".mhd"))


class FileGroupCandidate:
    """NIfTI files of one series (or an explicit list of scalar volume files)."""

    def __init__(self, entries, explicit=False, usable=True, reason=""):
        self.entries = entries
        self.explicit = explicit
        self.usable = usable
        self.reason = reason
        mags = [e for e in entries if e.component == "magnitude"]
        self.label = nifti.describe_group(entries) if not explicit else \
            f"{len(entries)} listed files"
        sc = next((e.sidecar for e in entries if e.sidecar), {}) or {}
        self.identifiers = {nifti.strip_suffix(e.path).lower() for e in entries}
        if sc.get("SeriesNumber") is not None:
            self.identifiers.add(str(sc["SeriesNumber"]))
        for k in ("SeriesDescription", "ProtocolName"):
            if sc.get(k):
                self.identifiers.add(str(sc[k]).strip().lower())
        self.identifiers.add(str(entries[0].group_key()[2]).strip().lower())
        self.n_files = len(mags)

    def summary(self):
        """One line for listings: label, number of magnitude files, echo-time range in ms."""
        tes = sorted(t for e in self.entries if e.component == "magnitude"
                     for t in (e.echo_times or []))
        te = f", TE {tes[0]:g}-{tes[-1]:g} ms" if tes else ", echo times not in sidecars"
        return f"NIfTI {self.label}: {self.n_files} magnitude file(s){te}"

    def load(self, echo_times_ms=None):
        """Read the files of this group.

        Parameters
        ----------
        echo_times_ms : sequence of float, optional
            Echo times in ms, one per echo, when the files do not record them.

        Returns
        -------
        MultiEchoImage
        """
        fmt = "nifti" if all(nifti.is_nifti(e.path) for e in self.entries) else "volume-files"
        return nifti.load_files(self.entries, echo_times_ms, explicit=self.explicit,
                                source_format=fmt)


class SequenceCandidate:
    """A NRRD volume sequence file (.seq.nrrd), or a 4-D NRRD."""

    def __init__(self, path):
        self.path = path
        self.usable = True
        self.reason = ""
        self.label = f"volume sequence {os.path.basename(path)}"
        self.identifiers = {nifti.strip_suffix(path).lower(), os.path.basename(path).lower()}

    def summary(self):
        """One line for listings."""
        return f"NRRD {self.label}"

    def load(self, echo_times_ms=None):
        """Read the sequence; T2* (gradient echo) is assumed, and a warning says so.

        Parameters
        ----------
        echo_times_ms : sequence of float, optional
            Echo times in ms, one per frame, when the header does not record them.

        Returns
        -------
        MultiEchoImage

        Raises
        ------
        EchoTimeError
            When the number of echo times differs from the number of frames.
        """
        seq = read_volume_sequence(self.path)
        found, source, looked = sequence_echo_times(seq, self.path)
        use, source = reconcile_echo_times(found, echo_times_ms, source or "")
        n = seq.frames.shape[0]
        if use is not None and len(use) != n:
            raise EchoTimeError(f"{len(use)} echo times were given for {n} frames in "
                                f"{self.path}. Give one echo time (ms) per frame.")
        metadata = {
            "source_format": "nrrd-sequence",
            "source_paths": [self.path],
            "echo_time_source": source if use is not None else None,
            "sequence_axis_label": seq.axis_label,
            "sequence_index_values": seq.index_values,
            "warnings": list(seq.notes),
        }
        field_t = None
        for key in ("MultiVolume.DICOM.MagneticFieldStrength", "MagneticFieldStrength"):
            if key in seq.keys:
                field_t = field_strength_from(seq.keys[key], metadata["warnings"])
                if field_t is not None:
                    metadata["field_strength_source"] = f"from the NRRD header ({key})"
        names = [f"frame {k} (index {seq.index_values[k]})" if k < len(seq.index_values)
                 else f"frame {k}" for k in range(n)]
        metadata["warnings"].append(
            "The sequence file does not say whether it is spin or gradient echo; T2* "
            "(gradient echo) was assumed. Pass quantity='T2' for a spin-echo series.")
        return stack_echoes(seq.frames, use if use is not None else [None] * n,
                            seq.ijk_to_ras, quantity="T2*", field_strength_t=field_t,
                            metadata=metadata, names=names,
                            looked_in=looked + ["the echo_times_ms argument"])


def _walk(folder):
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if not name.startswith("."):
                out.append(os.path.join(root, name))
    return out


def _nifti_groups(files):
    entries = [nifti.FileEntry(p) for p in sorted(files, key=nifti.natural_key)]
    groups = {}
    for e in entries:
        groups.setdefault(e.group_key(), []).append(e)
    cands = []
    for group in groups.values():
        mags = [e for e in group if e.component == "magnitude"]
        n_echoes = 0
        for e in mags:
            n_vol, _ = nifti.read_image_info(e.path)
            tes = e.echo_times or []
            n_echoes += len(tes) if len(tes) > 1 else (1 if len(tes) == 1 else n_vol)
        if not mags:
            cands.append(FileGroupCandidate(group, usable=False,
                                            reason=f"{group[0].component} images only"))
        elif n_echoes < 2:
            cands.append(FileGroupCandidate(group, usable=False, reason="a single echo"))
        else:
            cands.append(FileGroupCandidate(group))
    return cands


def find_candidates(path_or_paths):
    """Every candidate multi-echo series among the given folder or files.

    Parameters
    ----------
    path_or_paths : str, os.PathLike or sequence of them
        As in `load_multiecho`.

    Returns
    -------
    candidates : list of FileGroupCandidate, SequenceCandidate or DICOM candidates
    skipped : list of (str, str)
        (path, reason) of DICOM files that were skipped.
    where : str
        The input described for messages.

    Raises
    ------
    InputError
        For paths that do not exist, an empty list, or a folder inside a list of files.
    """
    if isinstance(path_or_paths, (str, os.PathLike)):
        path = os.fspath(path_or_paths)
        if not os.path.exists(path):
            raise InputError(f"{path} does not exist. Give a DICOM folder, a NIfTI/NRRD file "
                             "or a list of echo files.")
        if os.path.isdir(path):
            files, where, explicit = _walk(path), f"the folder {path}", False
        else:
            files, where, explicit = [path], path, False
    else:
        files = [os.fspath(p) for p in path_or_paths]
        if not files:
            raise InputError("An empty list of files was given. Give the echo files.")
        for p in files:
            if os.path.isdir(p):
                raise InputError(f"{p} is a folder; give a folder on its own, or a list of "
                                 "files.")
            if not os.path.isfile(p):
                raise InputError(f"{p} does not exist.")
        where, explicit = f"the {len(files)} files given", len(files) > 1
    seqs = [p for p in files if _is_nrrd(p)]
    volume_files = [p for p in files if _is_image_file(p) and not _is_nrrd(p)]
    others = [p for p in files if not _is_image_file(p)]
    candidates, skipped = [], []
    if others:
        dc, skipped = dicom.find_candidates(others)
        candidates.extend(dc)
    plain_nrrd = []
    for p in seqs:
        try:
            seq_dims = _nrrd_frame_count(p)
        except InputError as exc:
            skipped.append((p, str(exc)))
            continue
        if seq_dims > 1:
            candidates.append(SequenceCandidate(p))
        else:
            plain_nrrd.append(p)
    if explicit and (volume_files or plain_nrrd) and not others:
        entries = [nifti.FileEntry(p) for p in files if p in volume_files or p in plain_nrrd]
        candidates.append(FileGroupCandidate(entries, explicit=True))
    else:
        if volume_files:
            candidates.extend(_nifti_groups(volume_files))
        for p in plain_nrrd:
            c = FileGroupCandidate([nifti.FileEntry(p)], usable=False,
                                   reason="a single volume; pass all echo files as a list "
                                          "with echo_times_ms")
            candidates.append(c)
    return candidates, skipped, where


def _nrrd_frame_count(path):
    from .nrrd_sequence import read_nrrd_header

    fields, _, _ = read_nrrd_header(path)
    sizes = [int(s) for s in fields.get("sizes", "").split()]
    return int(np.prod(sizes[3:])) if len(sizes) > 3 else 1


def _listing(cands, limit=12):
    lines = [f"  - {c.summary()}" + ("" if c.usable else f" [not usable: {c.reason}]")
             for c in cands[:limit]]
    if len(cands) > limit:
        lines.append(f"  ... and {len(cands) - limit} more")
    return "\n".join(lines)


def choose_candidate(candidates, series, where, skipped=()):
    """The candidate named by ``series``, or the only usable one.

    Parameters
    ----------
    candidates : list
        From `find_candidates`.
    series : int, str or None
        Series number, UID, description or file name.
    where : str
        The input described for messages.
    skipped : sequence of (str, str)
        (path, reason) of skipped files, named when nothing is usable.

    Returns
    -------
    candidate

    Raises
    ------
    InputError
        Listing the candidates when none matches, several match, or none is usable.
    """
    usable = [c for c in candidates if c.usable]
    if series is not None:
        key = str(series).strip().lower()
        hits = [c for c in candidates if key in c.identifiers]
        if not hits:
            raise InputError(
                f"No series matching series={series!r} in {where}. Found:\n"
                + (_listing(candidates) or "  (nothing readable)")
                + "\nGive a series number, SeriesInstanceUID, description or file name "
                  "from this list.")
        hits_usable = [c for c in hits if c.usable]
        if len(hits_usable) > 1:
            raise InputError(
                f"series={series!r} matches several series in {where}:\n"
                + _listing(hits_usable) + "\nUse the SeriesInstanceUID to pick one.")
        if not hits_usable:
            raise InputError(f"{hits[0].summary()} cannot be fitted: it has "
                             f"{hits[0].reason}. Choose a multi-echo magnitude series.")
        return hits_usable[0]
    if len(usable) == 1:
        return usable[0]
    if not usable:
        found = _listing(candidates) if candidates else \
            "  (no DICOM images, NIfTI, NRRD or other image files)"
        if skipped:
            reasons = sorted({why for _, why in skipped})
            found += (f"\n  ({len(skipped)} DICOM file(s) skipped: " + "; ".join(reasons[:3])
                      + ")")
        raise InputError(
            f"No usable multi-echo series in {where}. Found:\n{found}\n"
            "A usable series has magnitude images at 2 or more echo times. Point to the "
            "folder or files of the multi-echo acquisition.")
    raise InputError(
        f"{where} holds {len(usable)} multi-echo series; say which one with series=... "
        "(number, SeriesInstanceUID, description or file name):\n" + _listing(usable))


def load_multiecho(path_or_paths, series=None, echo_times_ms: Sequence[float] | None = None,
                   quantity: str | None = None) -> MultiEchoImage:
    """Read a multi-echo magnitude series into a :class:`MultiEchoImage`.

    Parameters
    ----------
    path_or_paths : str, os.PathLike or sequence of them
        A DICOM folder (searched recursively; may also hold NIfTI or .seq.nrrd files), one
        file (enhanced DICOM, 4-D NIfTI with sidecar, .seq.nrrd), or a list of files, one
        per echo (DICOM, NIfTI, NRRD, ...).
    series : int or str, optional
        Which series to load when several are found: series number, SeriesInstanceUID,
        series description or file name (without extension).
    echo_times_ms : sequence of float, optional
        Echo times in ms, one per echo in input order (file order for a list). Needed only
        when the files do not record them; if they do, the two must agree.
    quantity : {"T2*", "T2"}, optional
        Overrides the quantity read from the files (spin echo gives "T2", else "T2*");
        the override is recorded in ``metadata["warnings"]``.

    Returns
    -------
    MultiEchoImage
        ``signal`` float32 [echo, k, j, i], ``echo_times_ms`` increasing, ``ijk_to_ras``
        (4x4, Slicer RAS), ``quantity`` ("T2*" or "T2"), ``field_strength_t`` (None if
        unknown), ``metadata`` (provenance; ``metadata["warnings"]`` lists anything changed,
        ``metadata["complex_components"]`` any phase/real/imaginary arrays set aside).

    Raises
    ------
    InputError, EchoTimeError, GeometryError
        With a message saying what is wrong and what to do.
    """
    candidates, skipped, where = find_candidates(path_or_paths)
    chosen = choose_candidate(candidates, series, where, skipped)
    if quantity is not None and quantity not in ("T2*", "T2"):
        raise InputError(f"quantity must be 'T2*' or 'T2', not {quantity!r}.")
    image = chosen.load(echo_times_ms)
    image.metadata.setdefault("series_label", chosen.label)
    if quantity is not None and quantity != image.quantity:
        image.metadata["warnings"].append(
            f"Quantity set to {quantity} by the caller (the files suggested {image.quantity}).")
        image.quantity = quantity
    return image


def list_series(path_or_paths):
    """Summaries of the candidate series found (for a chooser in a GUI or CLI).

    Parameters
    ----------
    path_or_paths : str, os.PathLike or sequence of them
        As in `load_multiecho`.

    Returns
    -------
    list of dict
        ``label``, ``summary``, ``usable``, ``reason``, ``identifiers`` (sorted list of str).
    """
    candidates, _, _ = find_candidates(path_or_paths)
    return [{"label": c.label, "summary": c.summary(), "usable": c.usable,
             "reason": c.reason, "identifiers": sorted(c.identifiers)} for c in candidates]
