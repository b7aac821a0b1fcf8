"""Figures of the report (matplotlib, optional): key image, slice montage, decay plots, PDF.

Maps are composed as pixel images with numpy (`IronMapping.display`: radiological orientation,
iron colour scale, outlines) and matplotlib only adds the text, one axes per figure, which keeps
the demo report well under its time budget. matplotlib is imported here, lazily by the report.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass

import numpy as np

from .display import IronScale, draw_outlines, grey, iron_scale, plane_view, slice_position, upsample
from .regions import mean_decay

MAX_MONTAGE_SLICES = 24
DPI = 100
PANEL_PX = 232        # montage panel width target (4 across an A4 page)
KEY_PANEL_PX = 400    # key image panel width target (2 across)
GAP = 4
SHOWN_PX = 740        # width the page shows a figure at (an A4 column)
BACK = 0.07           # figure background grey (0 black)


@dataclass
class Figure:
    """A rendered figure: PNG for the HTML page, its RGB pixels for the PDF, its caption.

    Attributes
    ----------
    png : bytes
    pixels : uint8 ndarray, shape (rows, cols, 3)
    caption : str
    title : str
    """

    png: bytes
    pixels: np.ndarray
    caption: str
    title: str


def _figure(width_px, height_px, dpi=DPI):
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = MplFigure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _render(fig, caption, title) -> Figure:
    """Draw once; the same pixels become the PNG and the PDF page."""
    from matplotlib.image import imsave

    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    buf = io.BytesIO()
    imsave(buf, rgb, format="png")
    return Figure(buf.getvalue(), rgb, caption, title)


def _stroke(width=2.0):
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=width, foreground="black")]


# --------------------------------------------------------------------------- map panels

class _Panels:
    """Displayed slices in radiological orientation with square pixels and outlines."""

    def __init__(self, image, fit, labels, label_names, width_px):
        self.view = plane_view(image.ijk_to_ras if image is not None else np.eye(4))
        self.ijk_to_ras = image.ijk_to_ras if image is not None else np.eye(4)
        self.r2 = np.asarray(fit.r2star, dtype=np.float32)
        self.labels = None if labels is None else np.asarray(labels)
        self.names = dict(label_names or {})
        self.first_echo = None if image is None else image.signal[0]
        base = min(self.view.row_mm, self.view.col_mm)
        self.fr = max(1, int(round(self.view.row_mm / base)))
        self.fc = max(1, int(round(self.view.col_mm / base)))
        cols = self.view.apply(self.r2[0]).shape[1] * self.fc
        self.zoom = max(1, int(round(width_px / max(cols, 1))))
        if self.first_echo is not None:
            inside = self.first_echo[np.isfinite(self.first_echo) & (self.first_echo > 0)]
            self.grey_high = float(np.percentile(inside, 99.5)) if inside.size else 1.0
        else:
            self.grey_high = 1.0

    def _up(self, plane):
        return upsample(self.view.apply(plane), self.fr * self.zoom, self.fc * self.zoom)

    def rgb(self, k, scale: IronScale, kind="r2"):
        if kind == "echo":
            rgb = grey(self._up(self.first_echo[k]), self.grey_high)
        else:
            rgb = scale.rgb(self._up(self.r2[k]))
        lab = None
        if self.labels is not None:
            lab = self._up(self.labels[k])
            draw_outlines(rgb, lab)
        return rgb, lab

    def name_positions(self, lab):
        """(name, top, bottom, left, right, centre col) of each region in a displayed slice,
        largest region first (its name is placed first)."""
        out = []
        if lab is None:
            return out
        values, counts = np.unique(lab[lab > 0], return_counts=True)
        for v in values[np.argsort(-counts)]:
            rows, cols = np.nonzero(lab == v)
            top = rows.min()
            out.append((self.names.get(int(v), f"label {int(v)}"), int(top), int(rows.max()),
                        int(cols.min()), int(cols.max()), int(np.mean(cols[rows == top]))))
        return out


def _free(cands: np.ndarray, boxes, w, h) -> np.ndarray:
    """Which candidate boxes [n, 4] (x0, y0, x1, y1) lie inside the panel and overlap none."""
    inside = (cands[:, 0] >= 0) & (cands[:, 1] >= 0) & (cands[:, 2] <= w) & (cands[:, 3] <= h)
    if len(boxes):
        b = np.asarray(boxes, dtype=np.float64)
        hit = ((cands[:, None, 0] < b[None, :, 2]) & (b[None, :, 0] < cands[:, None, 2])
               & (cands[:, None, 1] < b[None, :, 3]) & (b[None, :, 1] < cands[:, None, 3]))
        inside &= ~hit.any(axis=1)
    return inside


def place_names(regions, w, h, font_px, taken=(), strict=False, boxes=None):
    """Label positions that avoid each other, the orientation letters and the panel edges.

    Tried in order: above the region, below it, inside its top, right and left of it, inside
    its bounding box; failing all, the free place in the panel nearest to the region's top
    (``strict``: the name is left out instead).

    Parameters
    ----------
    regions : list of tuple
        ``name_positions()`` rows: (name, top, bottom, left, right, centre column) in pixels.
    w, h : float
        Panel width and height in pixels.
    font_px : float
        Font size in pixels.
    taken : sequence of (x0, y0, x1, y1)
        Occupied boxes (orientation letters).
    strict : bool
        Leave a name out rather than place it away from its region.
    boxes : list of (x0, y0, x1, y1), optional
        Occupied boxes to use and extend (default: a copy of ``taken``).

    Returns
    -------
    list of (str, float, float)
        (name, x, y) of box centres in panel pixels.
    """
    boxes = list(taken) if boxes is None else boxes
    out = []
    for name, top, bottom, left, right, centre in regions:
        bw, bh = 0.6 * font_px * len(name) + 4, 1.3 * font_px
        mid = (top + bottom) / 2
        centres = [(centre, top - bh / 2 - 1), (centre, bottom + bh / 2 + 1),
                   (centre, top + bh / 2 + 2), (right + bw / 2 + 2, mid), (left - bw / 2 - 2, mid)]
        centres += [(cx, cy) for cy in np.arange(top + bh / 2 + 2, bottom, bh)
                    for cx in np.arange(left + bw / 2, right - bw / 2 + 1, max(bw / 4, 1.0))]
        c = np.asarray(centres, dtype=np.float64)
        ok = _free(np.column_stack([c[:, 0] - bw / 2, c[:, 1] - bh / 2, c[:, 0] + bw / 2,
                                    c[:, 1] + bh / 2]), boxes, w, h)
        if ok.any():
            cx, cy = c[np.argmax(ok)]
        elif strict:
            continue
        else:
            gx, gy = np.meshgrid(np.arange(bw / 2, w - bw / 2 + 1, max(bw / 8, 1.0)),
                                 np.arange(bh / 2, h - bh / 2 + 1, bh / 2))
            g = np.column_stack([gx.ravel(), gy.ravel()])
            ok = _free(np.column_stack([g[:, 0] - bw / 2, g[:, 1] - bh / 2, g[:, 0] + bw / 2,
                                        g[:, 1] + bh / 2]), boxes, w, h) if g.size else np.zeros(0, bool)
            if ok.any():
                d = np.hypot(g[:, 0] - centre, g[:, 1] - top)
                cx, cy = g[np.argmin(np.where(ok, d, np.inf))]
            else:  # a crowded panel: above the region, clamped to the panel
                cx = min(max(centre, bw / 2), w - bw / 2)
                cy = min(max(top - bh / 2 - 1, bh / 2), h - bh / 2)
        boxes.append((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
        out.append((name, float(cx), float(cy)))
    return out


def organ_slices(r2, labels) -> np.ndarray:
    """Indices of the stored slices that hold a segmented region (or fitted voxels).

    Parameters
    ----------
    r2 : ndarray, shape (k, j, i)
        R2* map in 1/s (NaN where not fitted).
    labels : int ndarray, shape (k, j, i), or None

    Returns
    -------
    int ndarray
    """
    weight = (np.asarray(labels) > 0) if labels is not None else np.isfinite(r2)
    per_slice = weight.reshape(weight.shape[0], -1).sum(1)
    return np.flatnonzero(per_slice)


def key_slice(r2, labels) -> int:
    """The slice holding the most distinct regions (then the largest labelled area).

    Parameters
    ----------
    r2 : ndarray, shape (k, j, i)
        R2* map in 1/s.
    labels : int ndarray, shape (k, j, i), or None

    Returns
    -------
    int
        Index k; the middle slice when nothing is segmented or fitted.
    """
    candidates = organ_slices(r2, labels)
    if candidates.size == 0:
        return int(r2.shape[0] // 2)
    if labels is None:
        counts = np.isfinite(r2).reshape(r2.shape[0], -1).sum(1)
        return int(np.argmax(counts))
    labels = np.asarray(labels)
    best = max(candidates, key=lambda k: (np.unique(labels[k][labels[k] > 0]).size,
                                          int((labels[k] > 0).sum())))
    return int(best)


def _legend(fig, canvas_h, y0, width, scale: IronScale, rate: str, s=1.0):
    """A colour bar strip drawn in pixel coordinates at rows y0.. of the figure canvas
    (``s``: pixels per displayed pixel, when the page shows the figure smaller)."""
    bar_w, bar_h, x0 = int(width * 0.7), int(14 * s), int(width * 0.15)
    pos = np.linspace(0.0, 1.0, bar_w)
    bar = np.repeat(scale.rgb_of_position(pos)[None], bar_h, axis=0)
    ax = fig.add_axes([x0 / width, 1 - (y0 + 18 * s + bar_h) / canvas_h, bar_w / width,
                       bar_h / canvas_h])
    ax.imshow(bar, aspect="auto", interpolation="nearest", extent=(0, 1, 0, 1))
    ax.set_yticks([])
    ticks = scale.ticks()
    ax.set_xticks([t for t, _ in ticks])
    ax.set_xticklabels([label for _, label in ticks], fontsize=7, color="white")
    ax.tick_params(axis="x", colors="white", length=3, pad=1)
    for spine in ax.spines.values():
        spine.set_color("white")
    if scale.kind == "bands":
        n = len(scale.labels)
        for b, label in enumerate(scale.labels):
            ax.text((b + 0.5) / n, 1.15, label, transform=ax.transAxes, ha="center", va="bottom",
                    fontsize=7.5, color="white")
        title = f"{rate} (1/s), liver iron bands at {scale.field_strength_t:g} T"
    else:
        title = f"{rate} (1/s), logarithmic"
    fig.text(0.5, 1 - (y0 + bar_h + 38 * s) / canvas_h, title, ha="center", va="top", fontsize=7.5,
             color="white")


def _letters(ax, x0, y0, w, h, letters, s=1.0):
    style = dict(color="#ffd84d", fontsize=8, fontweight="bold", path_effects=_stroke(1.5))
    ax.text(x0 + w / 2, y0 + 2 * s, letters["top"], ha="center", va="top", **style)
    ax.text(x0 + w / 2, y0 + h - 2 * s, letters["bottom"], ha="center", va="bottom", **style)
    ax.text(x0 + 3 * s, y0 + h / 2, letters["left"], ha="left", va="center", **style)
    ax.text(x0 + w - 3 * s, y0 + h / 2, letters["right"], ha="right", va="center", **style)


def _compose(tiles, ncol):
    """Tiles (equal shape) into one RGB canvas with gaps; returns canvas and tile origins."""
    h, w = tiles[0].shape[:2]
    nrow = int(np.ceil(len(tiles) / ncol))
    canvas = np.full((nrow * (h + GAP) + GAP, ncol * (w + GAP) + GAP, 3), BACK, np.float32)
    origins = []
    for n, tile in enumerate(tiles):
        r, c = divmod(n, ncol)
        y, x = GAP + r * (h + GAP), GAP + c * (w + GAP)
        canvas[y:y + h, x:x + w] = tile
        origins.append((x, y))
    return canvas, origins, (w, h)


def _map_figure(panels: _Panels, items, ncol, scale, rate, caption, title, name_size,
                captions=None, names_once=False) -> Figure:
    """items: [(k, kind)] panels; one axes with the composed image, text on top."""
    tiles, labs = [], []
    for k, kind in items:
        rgb, lab = panels.rgb(k, scale, kind)
        tiles.append(rgb)
        labs.append(lab)
    canvas, origins, (w, h) = _compose(tiles, ncol)
    s = max(1.0, canvas.shape[1] / SHOWN_PX)  # the page shows the figure SHOWN_PX wide
    legend_h = int(62 * s)
    height, width = canvas.shape[0] + legend_h, canvas.shape[1]
    fig = _figure(width, height, dpi=DPI * s)
    fig.patch.set_facecolor((BACK, BACK, BACK))
    ax = fig.add_axes([0, legend_h / height, 1, 1 - legend_h / height])
    ax.imshow(canvas, interpolation="nearest", aspect="auto")
    ax.set_xlim(0, width)
    ax.set_ylim(canvas.shape[0], 0)
    ax.axis("off")
    stroke = _stroke(2.0)
    named = [panels.name_positions(lab) for lab in labs]
    font_px = name_size * DPI * s / 72.0
    lw, lh = 8 * s, 13 * s  # keep clear of the orientation letters and the slice label
    reserved = [(w / 2 - lw, 0, w / 2 + lw, lh), (w / 2 - lw, h - lh, w / 2 + lw, h),
                (0, h / 2 - lh / 2, 2 * lw, h / 2 + lh / 2), (w - 2 * lw, h / 2 - lh / 2, w, h / 2 + lh / 2),
                (0, h - lh, 75 * s, h)]
    boxes = [list(reserved) for _ in items]
    if names_once:  # each name once: beside the region, on the panel where it is largest
        sizes = {}
        for n, regions in enumerate(named):
            for region in regions:
                sizes.setdefault(region[0], []).append(((region[2] - region[1]) * (region[4] - region[3]), n, region))
        placed = [[] for _ in items]
        for name in sorted(sizes, key=lambda k: -max(sizes[k])[0]):
            for _, n, region in sorted(sizes[name], key=lambda t: -t[0]):
                spot = place_names([region], w, h, font_px, strict=True, boxes=boxes[n])
                if spot:
                    placed[n] += spot
                    break
    else:
        placed = [place_names(regions, w, h, font_px, boxes=boxes[n]) for n, regions in enumerate(named)]
    for n, ((k, kind), (x, y)) in enumerate(zip(items, origins)):
        _letters(ax, x, y, w, h, panels.view.letters, s)
        label = captions[n] if captions else slice_position(panels.ijk_to_ras, k, panels.r2.shape)
        ax.text(x + 3 * s, y + h - 3 * s, label, ha="left", va="bottom", fontsize=7, color="white",
                path_effects=stroke)
        for name, cx, cy in placed[n]:
            ax.text(x + cx, y + cy, name, ha="center", va="center", fontsize=name_size,
                    color="white", path_effects=stroke, clip_on=True)
    _legend(fig, height, canvas.shape[0], width, scale, rate, s)
    return _render(fig, caption, title)


def map_figures(fit, image, labels, label_names, summary, rate) -> list[Figure]:
    """Key image (first echo beside the R2* map) and the montage of every organ slice.

    Parameters
    ----------
    fit : RelaxometryFit
    image : MultiEchoImage or None
    labels : int ndarray, shape (k, j, i), or None
    label_names : dict of int to str
    summary : dict or None
        For the field strength and the grading bands.
    rate : str
        "R2*", or "R2" for spin echo.

    Returns
    -------
    list of Figure
        Empty when the maps are not 3-D.
    """
    r2 = np.asarray(fit.r2star)
    if r2.ndim != 3:
        return []
    field = (summary or {}).get("field_strength_t")
    if field is None and image is not None:
        field = image.field_strength_t
    scale = iron_scale(field, getattr(fit, "quantity", "T2*"))
    out = []
    view = plane_view(image.ijk_to_ras if image is not None else np.eye(4))
    orientation = (f"{view.plane} slices in radiological convention (patient's left on the "
                   f"image right)" if view.plane != "sagittal" else
                   "sagittal slices (anterior on the left, superior up)")
    k = key_slice(r2, labels)
    where = None
    if image is not None:
        where = slice_position(image.ijk_to_ras, k, r2.shape)
        key = _Panels(image, fit, labels, label_names, KEY_PANEL_PX)
        first_te = float(image.echo_times_ms[0])
        out.append(_map_figure(
            key, [(k, "echo"), (k, "r2")], 2, scale, rate,
            f"Key slice ({where}): first echo (TE {first_te:g} ms, {'T2*' if rate == 'R2*' else 'T2'}"
            f"-weighted) beside the {rate} map; "
            + ("organ outlines white on black, names at the outlines; " if labels is not None else "")
            + f"{orientation}. {scale.describe(rate)}",
            "Key slice", 9, captions=[f"TE {first_te:g} ms  {where}", f"{rate}  {where}"]))
    slices = organ_slices(r2, labels)
    total = int(slices.size)
    if total == 0:
        slices = np.arange(r2.shape[0])
    if slices.size > MAX_MONTAGE_SLICES:
        pick = np.linspace(0, slices.size - 1, MAX_MONTAGE_SLICES).round().astype(int)
        slices = slices[pick]
    positions = [slice_position(view_matrix(image), int(s), r2.shape) for s in slices]
    held = "hold a segmented region" if labels is not None else "hold fitted voxels"
    if slices.size == total:
        which = f"All {total} slices that {held} are shown ({positions[0]} to {positions[-1]})."
    else:
        which = (f"{slices.size} of the {total} slices that {held} are shown, evenly spaced: "
                 + ", ".join(positions) + ".")
    panels = _Panels(image, fit, labels, label_names, PANEL_PX)
    ncol = min(4, len(slices)) if len(slices) <= 4 else min((4, 3), key=lambda c: (-len(slices)) % c)
    out.append(_map_figure(panels, [(int(s), "r2") for s in slices], ncol, scale, rate,
                           f"{rate} map, {orientation}. {which} "
                           + ("Each region is named once, beside its outline on the largest slice "
                              "where the name fits. " if labels is not None else "")
                           + scale.describe(rate),
                           f"{rate} map, every organ slice", 7, names_once=True))
    return out


def view_matrix(image):
    """The image's ijk_to_ras (4, 4), or the identity without an image.

    Parameters
    ----------
    image : MultiEchoImage or None

    Returns
    -------
    ndarray, shape (4, 4)
    """
    return image.ijk_to_ras if image is not None else np.eye(4)


# --------------------------------------------------------------------------- decay plots

def _noise_floor(fit):
    from .noise import noise_floor_mean

    sigma, coils = getattr(fit, "noise_sigma", None), getattr(fit, "coils", None)
    if sigma is None or not np.isfinite(sigma) or sigma <= 0:
        return None
    return float(noise_floor_mean(sigma, coils or 1.0))


def decay_figure(image, fit, named, regions, rate) -> Figure:
    """Per-region mean decay (points), the ROI fit (line) and the noise floor (dashed).

    Parameters
    ----------
    image : MultiEchoImage
    fit : RelaxometryFit
    named : list of (str, bool ndarray of shape (k, j, i))
        (region name, mask) of the regions plotted.
    regions : list of dict
        The summary's region rows (ROI fits).
    rate : str
        "R2*", or "R2" for spin echo.

    Returns
    -------
    Figure
    """
    from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

    from .headline import fmt

    te = np.asarray(image.echo_times_ms, dtype=np.float64)
    stacked = np.zeros(image.shape, np.int32)
    for n, (_, mask) in enumerate(named, 1):
        stacked[mask] = n
    means = mean_decay(image.signal, stacked, list(range(1, len(named) + 1)))
    floor = _noise_floor(fit)
    by_name = {r.get("name"): r for r in regions}
    ncol = min(3, len(named))
    nrow = int(np.ceil(len(named) / ncol))
    fig = _figure(720, 150 * nrow + 60)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    positive = means[means > 0]
    top = float(positive.max()) * 1.6 if positive.size else 1.0
    bottom = min(float(positive.min()) if positive.size else 1.0, floor or np.inf) / 2.0
    t_fine = np.linspace(0.0, te[-1], 60)
    for ax in axes.ravel()[len(named):]:
        ax.axis("off")
    for ax, (name, _), y in zip(axes.ravel(), named, means):
        region = by_name.get(name, {})
        roi = region.get("roi_fit") or {}
        r2, s0 = region.get("r2star_roi_fit"), roi.get("s0")
        near = np.zeros(te.shape, bool) if floor is None else y < 2.0 * floor
        ax.plot(te[~near], y[~near], "o", ms=3.5, color="#08519c")
        ax.plot(te[near], y[near], "o", ms=3.5, mfc="white", color="#08519c")
        if floor is not None:
            ax.axhline(floor, color="#777777", ls="--", lw=1)
            ax.text(te[-1] * 0.02, floor * 1.12, "noise floor", ha="left", va="bottom",
                    fontsize=6, color="#555555")
        title = f"{name}: "
        if r2 is not None and np.isfinite(r2) and r2 > 0:
            if s0 is None or not np.isfinite(s0):
                decay = np.exp(-r2 * te / 1000.0)
                s0 = float(np.dot(y, decay) / max(np.dot(decay, decay), 1e-300))
            ax.plot(t_fine, s0 * np.exp(-r2 * t_fine / 1000.0), "-", color="#cb181d", lw=1.2)
            title += f"{rate} {fmt('r2star', r2)} (ROI fit)"
        elif region.get("r2star_lower_bound") is not None:
            title += f"{rate} > {fmt('bound', region['r2star_lower_bound'])} 1/s (lower bound)"
        else:
            title += "no ROI fit"
        ax.set_title(title, fontsize=7.5, loc="left")
    # Fixed ticks (decades, a few echo times): far cheaper to draw than the automatic locators
    decades = 10.0 ** np.arange(np.floor(np.log10(bottom)), np.ceil(np.log10(top)) + 1)
    x_ticks = MaxNLocator(5, integer=True).tick_values(0.0, float(te[-1]))
    for ax in axes.ravel()[:len(named)]:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(FixedLocator(decades))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_locator(FixedLocator(x_ticks[x_ticks <= te[-1] * 1.05]))
        ax.set_ylim(bottom, top)
        ax.set_xlim(0.0, te[-1] * 1.05)
        ax.tick_params(labelsize=6.5)
        ax.grid(True, which="major", color="#e5e5e5", lw=0.6)
    for n, ax in enumerate(axes.ravel()[:len(named)]):
        row, col = divmod(n, ncol)
        if n + ncol < len(named):  # another plot below shows the echo times
            ax.tick_params(labelbottom=False)
        else:
            ax.set_xlabel("echo time (ms)", fontsize=7)
        if col:
            ax.tick_params(labelleft=False)
        else:
            ax.set_ylabel("mean signal", fontsize=7)
    fig.subplots_adjust(left=0.08, right=0.99, top=1 - 28 / (150 * nrow + 60),
                        bottom=42 / (150 * nrow + 60), wspace=0.08, hspace=0.45)
    floor_text = ("dashed line: noise floor (mean magnitude of pure noise, "
                  f"{floor:.3g} signal units); open points: below twice the "
                  "floor, where the decay can no longer be read" if floor is not None else
                  "no noise level known: noise floor not drawn")
    caption = (f"Mean signal of each region against echo time (log scale; points), the "
               f"ROI-averaged mono-exponential fit ({rate}, line) and the {floor_text}.")
    return _render(fig, caption, "Decay per region")


# --------------------------------------------------------------------------- PDF

A4 = (8.27, 11.69)


def write_pdf(path, title: str, text_blocks, figures) -> None:
    """Write report.pdf: a text page (the first-screen answer) then the figures, A4 portrait.

    Parameters
    ----------
    path : str or Path
    title : str
    text_blocks : list of (str, str)
        (style, text) with style "h1", "h2", "p", "row" (tab-separated columns) or "small".
    figures : list of Figure
    """
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(str(path), metadata={"Title": title, "Creator": "IronMapping"}) as pdf:
        page = _text_page(title, text_blocks)
        pdf.savefig(page)
        for fig in figures:
            pdf.savefig(_image_page(fig))


def _new_page():
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = MplFigure(figsize=A4)
    FigureCanvasAgg(fig)
    return fig


def _text_page(title, blocks):
    fig = _new_page()
    y = 0.95
    left, width_chars = 0.07, 100
    sizes = {"h1": 15, "h2": 11, "p": 8.5, "row": 8, "small": 7}
    for style, text in blocks:
        if y < 0.05:
            break
        size = sizes.get(style, 8.5)
        weight = "bold" if style in ("h1", "h2") else "normal"
        if style == "row":
            cells = text.split("\t")
            xs = (left, left + 0.17, left + 0.43)
            lines = 1
            for x, cell, chars in zip(xs, cells, (22, 34, 60)):
                wrapped = textwrap.wrap(cell, chars) or [""]
                lines = max(lines, len(wrapped))
                fig.text(x, y, "\n".join(wrapped), fontsize=size, va="top",
                         weight="bold" if x == left else "normal")
            y -= 0.0145 * lines + 0.004
            continue
        wrapped = textwrap.wrap(text, int(width_chars * 8.5 / size)) or [""]
        if style in ("h2",):
            y -= 0.008
        fig.text(left, y, "\n".join(wrapped), fontsize=size, va="top", weight=weight)
        y -= (0.0155 * size / 8.5) * len(wrapped) + 0.008
    return fig


def _image_page(figure: Figure):
    fig = _new_page()
    h, w = figure.pixels.shape[:2]
    box_w, box_h = 0.86, 0.78
    page_ratio = A4[1] / A4[0]
    aspect = (h / w) / page_ratio  # height of the image in page-height units per page width
    width = min(box_w, box_h / aspect)
    height = width * aspect
    ax = fig.add_axes([(1 - width) / 2, 0.93 - height, width, height])
    ax.imshow(figure.pixels, interpolation="none")  # RGB pixels as rendered for the page
    ax.axis("off")
    fig.text(0.07, 0.96, figure.title, fontsize=12, weight="bold", va="top")
    fig.text(0.07, 0.91 - height, "\n".join(textwrap.wrap(figure.caption, 120)), fontsize=7.5,
             va="top")
    return fig
