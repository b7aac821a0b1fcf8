"""How maps are shown to a radiologist: display orientation, the iron colour scale, outlines.

    >>> from IronMapping.display import plane_view, iron_scale
    >>> view = plane_view(image.ijk_to_ras)          # radiological convention for stored slices
    >>> view.plane, view.letters["right"]            # ('axial', 'L')
    >>> rgb = iron_scale(1.5).rgb(view.apply(r2star[k]))

Radiological convention (as Slicer's and every PACS viewer's default): axial and coronal
slices are seen from the feet / the front, so the patient's left is on the image's right;
axial has anterior up, coronal and sagittal superior up, sagittal anterior on the left. The
orientation comes from the image's direction matrix (IJK to RAS), never from the array order.

The iron colour scale gives each liver iron band of the published grading table
(IronMapping.grading: normal / mild / moderate / severe at 1.5 T or 3 T) its own hue, with a
lighter-to-darker ramp inside each band, so spleen and muscle (20-30 1/s) stay visible next to
a loaded liver (450 1/s). Without bands (unknown field strength, spin-echo R2) a logarithmic
scale is used. Pure numpy: no matplotlib needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Screen right and screen down as RAS unit vectors for each plane (radiological convention).
_SCREEN = {
    "axial": ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),     # right = patient left, down = posterior
    "coronal": ((-1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),   # right = patient left, down = inferior
    "sagittal": ((0.0, -1.0, 0.0), (0.0, 0.0, -1.0)),  # right = posterior, down = inferior
}
_PLANE_OF_NORMAL = ("sagittal", "coronal", "axial")  # dominant RAS axis of the slice normal
_LETTERS = (("R", "L"), ("A", "P"), ("S", "I"))


def direction_letters(vector, secondary: float = 0.35) -> str:
    """Anatomical letters of a RAS direction: (0, 0, 1) -> 'S'; oblique (0.8, 0.6, 0) -> 'RA'.

    Parameters
    ----------
    vector : array-like, shape (3,)
        RAS direction (any length).
    secondary : float
        Least component (of the unit vector) for a second letter.

    Returns
    -------
    str
    """
    v = np.asarray(vector, dtype=np.float64)
    v = v / (np.linalg.norm(v) or 1.0)
    order = np.argsort(-np.abs(v))
    letters = ""
    for n, axis in enumerate(order[:2]):
        if n == 0 or abs(v[axis]) >= secondary:
            letters += _LETTERS[axis][0 if v[axis] > 0 else 1]
    return letters


@dataclass(frozen=True)
class PlaneView:
    """How to turn a stored slice array (j, i) into the displayed image (row, column).

    Attributes
    ----------
    plane : str
        "axial", "coronal" or "sagittal" (nearest, for oblique slices too).
    transpose : bool
        Swap the stored axes first.
    flip_rows, flip_cols : bool
        Then reverse them.
    letters : dict of str to str
        {"left", "right", "top", "bottom"}: anatomical letters at the image edges.
    row_mm, col_mm : float
        Pixel size of the displayed image in mm.
    normal_letters : str
        The direction slices advance in (e.g. "S"), for slice positions.
    """

    plane: str
    transpose: bool
    flip_rows: bool
    flip_cols: bool
    letters: dict = field(default_factory=dict)
    row_mm: float = 1.0
    col_mm: float = 1.0
    normal_letters: str = ""

    def apply(self, plane2d: np.ndarray) -> np.ndarray:
        """The displayed image of a stored slice.

        Parameters
        ----------
        plane2d : ndarray, shape (j, i, ...)
            Any trailing channel axes are kept.

        Returns
        -------
        ndarray, shape (rows, cols, ...)
        """
        out = np.swapaxes(plane2d, 0, 1) if self.transpose else plane2d
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return out


def plane_view(ijk_to_ras) -> PlaneView:
    """Radiological display of the stored slices (array axis k) of an image.

    Parameters
    ----------
    ijk_to_ras : ndarray, shape (4, 4)
        Voxel (i, j, k) to RAS mm matrix of the image.

    Returns
    -------
    PlaneView
    """
    m = np.asarray(ijk_to_ras, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    spacing = np.where(spacing > 0, spacing, 1.0)
    i_dir, j_dir, k_dir = (m[:, n] / spacing[n] for n in range(3))
    normal = np.cross(i_dir, j_dir)
    if not np.any(normal):
        normal = k_dir
    plane = _PLANE_OF_NORMAL[int(np.argmax(np.abs(normal)))]
    right, down = (np.asarray(v) for v in _SCREEN[plane])
    transpose = abs(j_dir @ right) > abs(i_dir @ right)
    col_dir, row_dir = (j_dir, i_dir) if transpose else (i_dir, j_dir)
    col_mm, row_mm = (spacing[1], spacing[0]) if transpose else (spacing[0], spacing[1])
    flip_cols = bool(col_dir @ right < 0)
    flip_rows = bool(row_dir @ down < 0)
    screen_right = -col_dir if flip_cols else col_dir
    screen_down = -row_dir if flip_rows else row_dir
    letters = {"right": direction_letters(screen_right), "left": direction_letters(-screen_right),
               "bottom": direction_letters(screen_down), "top": direction_letters(-screen_down)}
    return PlaneView(plane, bool(transpose), flip_rows, flip_cols, letters, float(row_mm),
                     float(col_mm), direction_letters(k_dir))


def slice_position(ijk_to_ras, k: int, shape) -> str:
    """Where slice k lies along its dominant axis, as a radiologist reads it: 'S 12.0 mm'.

    Parameters
    ----------
    ijk_to_ras : ndarray, shape (4, 4)
        Voxel index to RAS mm.
    k : int
        Slice index.
    shape : tuple of int
        (..., k, j, i) of the image.

    Returns
    -------
    str
    """
    m = np.asarray(ijk_to_ras, dtype=np.float64)
    nk, nj, ni = shape[-3:]
    centre = m @ np.array([(ni - 1) / 2.0, (nj - 1) / 2.0, float(k), 1.0])
    normal = np.cross(m[:3, 0], m[:3, 1])
    axis = int(np.argmax(np.abs(normal))) if np.any(normal) else 2
    value = centre[axis]
    return f"{_LETTERS[axis][0 if value >= 0 else 1]} {abs(value):.1f} mm"


# --------------------------------------------------------------------------- colour scale

# (start, end) RGB of the ramp inside each band: blue-teal normal, yellow mild, orange-red
# moderate, magenta-pink severe; hues differ at every band limit.
_BAND_RAMPS = (((0.13, 0.20, 0.55), (0.30, 0.75, 0.85)),
               ((1.00, 1.00, 0.55), (1.00, 0.80, 0.10)),
               ((1.00, 0.55, 0.00), (0.85, 0.10, 0.10)),
               ((0.70, 0.00, 0.70), (1.00, 0.65, 1.00)))
_LOG_RAMP = ((0.13, 0.20, 0.55), (0.30, 0.75, 0.85), (1.00, 1.00, 0.55), (1.00, 0.55, 0.00),
             (0.85, 0.10, 0.10), (1.00, 0.65, 1.00))
BACKGROUND_RGB = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class IronScale:
    """Colours for R2* (1/s).

    Attributes
    ----------
    kind : str
        "bands" (liver bands, equal share of the colour bar each) or "log".
    limits : tuple of float
        Band limits in 1/s, from 0 to the top of the scale (bands), or (low, high) (log).
    labels : tuple of str
        Band names.
    source : str
        Where the limits come from.
    field_strength_t : float or None
        Field strength in T of the bands.
    """

    kind: str
    limits: tuple
    labels: tuple = ()
    source: str = ""
    field_strength_t: float | None = None

    def position(self, values) -> np.ndarray:
        """Place of each value on the colour bar, 0..1 (clipped); NaN stays NaN.

        Parameters
        ----------
        values : ndarray
            R2* in 1/s, any shape.

        Returns
        -------
        ndarray, same shape
        """
        v = np.asarray(values, dtype=np.float64)
        if self.kind == "bands":
            n = len(self.limits) - 1
            return np.interp(v, self.limits, np.linspace(0.0, 1.0, n + 1))
        lo, hi = self.limits
        with np.errstate(invalid="ignore", divide="ignore"):
            pos = np.log(np.clip(v, lo, hi) / lo) / np.log(hi / lo)
        return np.where(np.isnan(v), np.nan, pos)

    def _knots(self):
        if self.kind == "bands":
            n = len(self.limits) - 1
            xs, colours = [], []
            for b, (start, end) in enumerate(_BAND_RAMPS[:n]):
                xs += [b / n + (1e-9 if b else 0.0), (b + 1) / n - (1e-9 if b < n - 1 else 0.0)]
                colours += [start, end]
            return np.array(xs), np.array(colours)
        return np.linspace(0.0, 1.0, len(_LOG_RAMP)), np.array(_LOG_RAMP)

    def rgb_of_position(self, pos) -> np.ndarray:
        """Colours of colour-bar positions; black (BACKGROUND_RGB) for NaN.

        Parameters
        ----------
        pos : ndarray
            Positions 0..1, any shape.

        Returns
        -------
        float32 ndarray, shape pos.shape + (3,)
            RGB 0..1.
        """
        xs, colours = self._knots()
        pos = np.asarray(pos, dtype=np.float64)
        out = np.empty(pos.shape + (3,), np.float32)
        safe = np.nan_to_num(pos, nan=0.0)
        for c in range(3):
            out[..., c] = np.interp(safe, xs, colours[:, c])
        out[np.isnan(pos)] = BACKGROUND_RGB
        return out

    def rgb(self, values) -> np.ndarray:
        """Colours of R2* values; black where not fitted (NaN).

        Parameters
        ----------
        values : ndarray
            R2* in 1/s, any shape.

        Returns
        -------
        float32 ndarray, shape values.shape + (3,)
            RGB 0..1.
        """
        return self.rgb_of_position(self.position(values))

    def ticks(self) -> list[tuple[float, str]]:
        """(position 0..1, label) for the colour bar."""
        if self.kind == "bands":
            n = len(self.limits) - 1
            return [(b / n, f"{self.limits[b]:g}") for b in range(n)] + [(1.0, f"{self.limits[-1]:g}+")]
        lo, hi = self.limits
        values = [v for v in (5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if lo <= v <= hi]
        return [(float(self.position(v)), f"{v:g}") for v in values]

    def describe(self, rate: str = "R2*") -> str:
        """The colour scale in words, with its source, for reports.

        Parameters
        ----------
        rate : str
            "R2*", or "R2" for spin echo.

        Returns
        -------
        str
        """
        if self.kind == "bands":
            bands = ", ".join(f"{label} {self.limits[n]:g}-{self.limits[n + 1]:g}"
                              for n, label in enumerate(self.labels))
            return (f"{rate} colour scale in the liver iron bands at {self.field_strength_t:g} T "
                    f"({bands} 1/s; values above {self.limits[-1]:g} 1/s in the top colour); "
                    f"source: {self.source}. The colours show {rate} in every organ; only the "
                    "liver is graded by these bands. Black: not fitted.")
        return (f"{rate} colour scale logarithmic from {self.limits[0]:g} to {self.limits[1]:g} "
                "1/s (no published liver bands apply to this series). Black: not fitted.")


def iron_scale(field_strength_t, quantity: str = "T2*") -> IronScale:
    """The liver-band scale at 1.5 T or 3 T; a log scale otherwise (unknown field, spin echo).

    Parameters
    ----------
    field_strength_t : float or None
        Field strength in T.
    quantity : str
        "T2*"; "T2" (spin echo) gives the log scale.

    Returns
    -------
    IronScale
    """
    from .grading import find_scheme

    scheme = find_scheme("liver", field_strength_t, "R2*") if quantity == "T2*" else None
    if scheme is None:
        return IronScale("log", (5.0, 2000.0))
    highs = [b.high for b in scheme.bands[:-1]]
    top = 2.0 * highs[-1]  # the severe band's ramp spans up to twice its lower limit
    return IronScale("bands", (0.0, *highs, top), tuple(b.label for b in scheme.bands),
                     f"{scheme.source}", float(scheme.field_strength_t))


# --------------------------------------------------------------------------- outlines

def upsample(plane: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Nearest-neighbour enlargement by integer factors (keeps label values exact).

    Parameters
    ----------
    plane : ndarray, shape (n_rows, n_cols, ...)
    rows, cols : int
        Enlargement factors along the rows and the columns.

    Returns
    -------
    ndarray, shape (n_rows * rows, n_cols * cols, ...)
    """
    return np.repeat(np.repeat(plane, rows, axis=0), cols, axis=1)


def outline_masks(labels2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The one-pixel boundary inside each labelled region and a one-pixel ring around it.

    An outline drawn white on black shows on any colour.

    Parameters
    ----------
    labels2d : int ndarray, shape (rows, cols)
        0 is background.

    Returns
    -------
    edge, halo : bool ndarray, shape (rows, cols)
    """
    lab = np.asarray(labels2d)
    edge = np.zeros(lab.shape, bool)
    diff_v = lab[:-1, :] != lab[1:, :]
    diff_h = lab[:, :-1] != lab[:, 1:]
    edge[:-1, :] |= diff_v
    edge[1:, :] |= diff_v
    edge[:, :-1] |= diff_h
    edge[:, 1:] |= diff_h
    edge &= lab > 0
    grown = edge.copy()
    grown[:-1, :] |= edge[1:, :]
    grown[1:, :] |= edge[:-1, :]
    grown[:, :-1] |= edge[:, 1:]
    grown[:, 1:] |= edge[:, :-1]
    return edge, grown & ~edge


def draw_outlines(rgb: np.ndarray, labels2d: np.ndarray) -> np.ndarray:
    """White region outlines on a black halo, drawn into an RGB image (in place, returned).

    Parameters
    ----------
    rgb : ndarray, shape (rows, cols, 3)
    labels2d : int ndarray, shape (rows, cols)

    Returns
    -------
    ndarray, shape (rows, cols, 3)
        ``rgb``.
    """
    edge, halo = outline_masks(labels2d)
    rgb[halo] = 0.0
    rgb[edge] = 1.0
    return rgb


def grey(plane: np.ndarray, high: float) -> np.ndarray:
    """A grey RGB image of a plane windowed 0..high (NaN black).

    Parameters
    ----------
    plane : ndarray, shape (rows, cols)
    high : float
        Value shown white, in the plane's units.

    Returns
    -------
    float32 ndarray, shape (rows, cols, 3)
    """
    g = np.clip(np.nan_to_num(np.asarray(plane, dtype=np.float32) / max(high, 1e-12)), 0.0, 1.0)
    return np.repeat(g[..., None], 3, axis=-1)
