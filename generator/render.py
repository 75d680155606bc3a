"""Rendering: tensors → pictures. No model code here, no page code here.

Conventions
- Functions here return pictures; :mod:`generator.figure_files` saves them (``save_image``, or
  ``draw`` to run the drawing in the build's render pool too).
- One display rule, :func:`normalise_maps`: each map is divided by the 99th percentile of
  its absolute value and clipped to [0, 1] (signed maps: to [-1, 1]). Heatmaps are then
  coloured (:func:`heatmap_image`); signed pixel-space attributions are shown as images
  with grey = 0 (:func:`signed_to_rgb`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .receptive_field import crop_patch

CMAP = "inferno"
PERCENTILE = 99.0


def to_pil(img: torch.Tensor | np.ndarray | Image.Image) -> Image.Image:
    """3×H×W or H×W×3 float in [0,1] (or uint8) → PIL RGB."""
    if isinstance(img, Image.Image):
        return img.convert("RGB")
    if isinstance(img, torch.Tensor):
        a = img.detach().cpu().numpy() if img.dtype == torch.uint8 else img.detach().float().cpu().numpy()
    else:
        a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(a).convert("RGB")


def to_uint8(x01: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] → uint8 (rounded)."""
    return (x01 * 255).round().to(torch.uint8)


def _quantile_per_map(a: torch.Tensor, q: float) -> torch.Tensor:
    flat = a.reshape(len(a), -1).float()
    if flat.shape[1] > 1_000_000:  # torch.quantile has an input-size limit
        flat = flat[:, :: math.ceil(flat.shape[1] / 1_000_000)]
    return torch.quantile(flat, q, dim=1)


def normalise_maps(maps: torch.Tensor, signed: bool = False, percentile: float = PERCENTILE) -> torch.Tensor:
    """The display rule. ``maps`` (first dimension: one map each, any shape after it) →
    each divided by its own ``percentile`` of |map| and clipped to [0, 1], or to [-1, 1]
    when ``signed``. A map whose percentile is 0 is divided by its maximum |value|
    instead; an all-zero map stays 0. Scales are therefore not comparable across maps:
    a few extreme pixels would otherwise turn everything else black."""
    a = maps.detach().float()
    mag = a.abs()
    scale = _quantile_per_map(mag, percentile / 100)
    scale = torch.where(scale > 0, scale, mag.reshape(len(a), -1).amax(1))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    a = a / scale.view(-1, *([1] * (a.ndim - 1)))
    return a.clamp(-1, 1) if signed else a.clamp(0, 1)


def signed_to_rgb(attribution: torch.Tensor) -> torch.Tensor:
    """Signed B×3×H×W pixel-space attributions → images in [0, 1], grey (0.5) = 0, each
    scaled by :func:`normalise_maps` (how deconvnet / guided-backprop reconstructions
    are shown in the papers)."""
    return 0.5 + 0.5 * normalise_maps(attribution, signed=True)


def colourise(m01: np.ndarray, cmap: str = CMAP, signed: bool = False) -> np.ndarray:
    """Normalised map → H×W×3 float RGB."""
    from matplotlib import colormaps

    x = (m01 + 1.0) / 2.0 if signed else m01
    return colormaps[cmap](x)[..., :3]


def heatmap_image(m: torch.Tensor, size: int | None = None, cmap: str = CMAP, signed: bool = False) -> Image.Image:
    """One H×W map → a coloured picture, scaled by the display rule."""
    rgb = colourise(normalise_maps(torch.as_tensor(m)[None], signed)[0].numpy(), cmap, signed)
    pil = to_pil(rgb)
    if size and pil.size != (size, size):
        pil = pil.resize((size, size), Image.BILINEAR)
    return pil


def overlay(image: torch.Tensor, m, alpha: float = 0.55, cmap: str = CMAP) -> Image.Image:
    """Heatmap over a (greyed) image, both resized to the image size."""
    base = to_pil(image)
    heat = heatmap_image(m, cmap=cmap).resize(base.size, Image.BILINEAR)
    grey = base.convert("L").convert("RGB")
    return Image.blend(grey, heat, alpha)


def overlay_row(image: torch.Tensor, maps: torch.Tensor, labels: Sequence[str], tile: int = 160) -> Image.Image:
    """Each of ``maps`` (N×h×w) upsampled to the photo ``image`` (3×H×W) and laid over it, in one labelled row."""
    H = image.shape[-1]
    up = F.interpolate(maps.float()[:, None], size=(H, H), mode="bilinear", align_corners=False)[:, 0]
    return grid([overlay(image, m) for m in up], len(up), tile, labels=labels)


def overlay_thumb(image: torch.Tensor, m: torch.Tensor, size: int = 112) -> Image.Image:
    """Map ``m`` (h×w) upsampled to the photo and laid over it, as a size×size thumbnail."""
    H = image.shape[-1]
    up = F.interpolate(m.float()[None, None], size=(H, H), mode="bilinear", align_corners=False)[0, 0]
    return overlay(image, up).resize((size, size))


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def grid(tiles: Sequence[Image.Image], ncols: int, tile: int, pad: int = 2, labels: Sequence[str] | None = None,
         bg=(255, 255, 255)) -> Image.Image:
    """Tiles (resized to tile×tile) in a grid; optional small label under each."""
    n = len(tiles)
    ncols = max(1, min(ncols, n)) if n else 1
    nrows = (n + ncols - 1) // ncols if n else 1
    lab_h = 14 if labels else 0
    W = ncols * (tile + pad) + pad
    H = nrows * (tile + lab_h + pad) + pad
    canvas = Image.new("RGB", (W, H), bg)
    draw = ImageDraw.Draw(canvas)
    font = _font(11)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        x, y = pad + c * (tile + pad), pad + r * (tile + lab_h + pad)
        canvas.paste(t.convert("RGB").resize((tile, tile), Image.BILINEAR), (x, y))
        if labels:
            draw.text((x + 2, y + tile + 1), str(labels[i])[: max(4, tile // 6)], fill=(0, 0, 0), font=font)
    return canvas


def labelled_grid(rows: Sequence[Sequence[Image.Image]], col_labels: Sequence[str], row_labels: Sequence[str],
                  tile: int, pad: int = 3, label_w: int = 110, head_h: int = 30) -> Image.Image:
    """A table of pictures: ``rows[r][c]`` (a picture, or a 2-D map drawn by :func:`heatmap_image`) resized
    to ``tile``, column labels on top (wrapped to two lines), row labels on the left (wrapped to fit the
    tile's height)."""
    ncols = max((len(r) for r in rows), default=0)
    W = label_w + ncols * (tile + pad) + pad
    H = head_h + len(rows) * (tile + pad) + pad
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(11)

    def wrap(text: str, width_px: int, max_lines: int) -> list[str]:
        # Pillow's built-in font has no superscript glyphs (SmoothGrad²)
        words, lines, line = str(text).replace("²", "^2").split(), [], ""
        for word in words:
            trial = f"{line} {word}".strip()
            if draw.textlength(trial, font=font) <= width_px or not line:
                line = trial
            else:
                lines.append(line)
                line = word
        lines.append(line)
        if len(lines) > max_lines:
            lines = lines[:max_lines]
            lines[-1] = lines[-1][: max(1, len(lines[-1]) - 1)] + "…"
        return lines

    for c, text in enumerate(col_labels[:ncols]):
        for k, line in enumerate(wrap(text, tile - 6, 2)):
            draw.text((label_w + pad + c * (tile + pad) + 2, 2 + 13 * k), line, fill=(0, 0, 0), font=font)
    for r, row in enumerate(rows):
        y = head_h + pad + r * (tile + pad)
        for k, line in enumerate(wrap(row_labels[r] if r < len(row_labels) else "", label_w - 6, max(1, tile // 13))):
            draw.text((2, y + 2 + 13 * k), line, fill=(0, 0, 0), font=font)
        for c, t in enumerate(row):
            t = heatmap_image(t) if isinstance(t, torch.Tensor) else t
            canvas.paste(t.convert("RGB").resize((tile, tile), Image.BILINEAR), (label_w + pad + c * (tile + pad), y))
    return canvas


def colour_bar(label: str, cmap: str = CMAP, signed: bool = False, ticks=None):
    """A small horizontal colour bar with a label: a matplotlib figure (save it with
    :func:`generator.figure_files.save_plot`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    fig, ax = plt.subplots(figsize=(4.0, 0.45))
    norm = colors.Normalize(-1 if signed else 0, 1)
    cb = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), cax=ax, orientation="horizontal")
    cb.set_label(label, fontsize=8)
    if ticks is not None:
        cb.set_ticks(ticks)
    cb.ax.tick_params(labelsize=7)
    return fig


def maps_grid(maps: torch.Tensor, labels: Sequence[str], tile: int = 72, ncols: int = 8, cmap: str = CMAP,
              caption: str = "activation") -> Image.Image:
    """k×H×W non-negative maps on ONE shared colour scale (0 … max of all maps), in a
    grid, with a colour bar strip underneath showing that scale."""
    from matplotlib import colormaps

    a = maps.detach().float().cpu().clamp(min=0).numpy()
    vmax = float(a.max()) if a.size else 0.0
    scaled = a / vmax if vmax > 0 else a
    tiles = [to_pil(colourise(s, cmap)) for s in scaled]
    g = grid(tiles, ncols, tile, labels=labels)
    bar_h = 26
    canvas = Image.new("RGB", (g.width, g.height + bar_h), (255, 255, 255))
    canvas.paste(g, (0, 0))
    bw = max(40, g.width - 120)
    ramp = (colormaps[cmap](np.linspace(0, 1, bw))[:, :3] * 255).astype(np.uint8)
    strip = Image.fromarray(np.repeat(ramp[None], 10, axis=0))
    canvas.paste(strip, (60, g.height + 4))
    d = ImageDraw.Draw(canvas)
    f = _font(11)
    d.text((4, g.height + 3), "0", fill=(0, 0, 0), font=f)
    d.text((64 + bw, g.height + 3), f"{vmax:.3g}", fill=(0, 0, 0), font=f)
    d.text((60, g.height + 14), caption, fill=(60, 60, 60), font=f)
    return canvas


def field_tile(image: torch.Tensor, box, field, tile: int, signed: bool = False) -> torch.Tensor:
    """A unit's receptive field cut out of ``image`` (3×H×W) → 3×tile×tile uint8.

    ``box`` is the field clipped to the image, ``field`` the unclipped one: a field that
    fits in the image is padded where it extends past the border (so border units keep
    their geometry), a larger one is shown clipped. ``signed``: ``image`` is a signed
    projection, scaled inside the field by :func:`signed_to_rgb` (padding = 0 = grey);
    otherwise a photo in [0, 1], padded with grey.
    """
    h, w = image.shape[-2:]
    if field[2] - field[0] > h or field[3] - field[1] > w:
        field = None
    if signed:
        crop = signed_to_rgb(crop_patch(image, box, field, fill=0.0)[None])[0]
    else:
        crop = crop_patch(image, box, field, fill=0.5)
    return to_uint8(resize_tile(crop, tile))


NEURON_DISPLAY_W = 720  # px: the text column a page figure is shown in (1280 px screen)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text``, shortened with ".." until it is at most ``width`` px wide in ``font``."""
    text = str(text)
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "..", font=font) > width:
        text = text[:-1]
    return text + ".." if text else ""


def neuron_figure(images: Sequence[torch.Tensor], labels: Sequence[str], neurons: Sequence[dict], tile: int,
                  display_w: int = NEURON_DISPLAY_W) -> Image.Image | None:
    """Zeiler & Fergus-style figure: per image, the image with the units' receptive fields
    outlined in yellow, then per unit its projection tiles and the image patch (labelled: channel
    under the first projection, activation under the patch). ``neurons[i]``: ``picks`` (k×3:
    channel, y, x), ``values``, ``boxes`` (k×4, y0 x0 y1 x1), ``proj`` (rules×k×3×tile×tile
    uint8) and ``patch`` (k×3×tile×tile uint8). None when there is nothing to draw.

    Legible where it is shown: the units of an image wrap onto further lines so the figure is
    at most about ``display_w`` px wide (shown unscaled in the text column), the label font
    grows with the figure if it is still wider (≥ 11 px once scaled to ``display_w``), and every
    label is shortened to its own cell, so no two labels touch. The label boxes are kept in
    ``figure.info["label_boxes"]`` (x0, y0, x1, y1) for tests."""
    k = max((len(r["picks"]) for r in neurons), default=0)
    if not neurons or k == 0:
        return None
    per = len(neurons[0]["proj"]) + 1
    pad, gap = 3, 10  # between tiles of a unit / between units and images
    group_w = per * (tile + pad) - pad
    groups = max(1, (display_w - tile - pad) // (group_w + gap))
    groups = min(groups, k)
    lines_per_image = -(-k // groups)
    W = pad + tile + groups * (gap + group_w) + pad
    fs = max(12, math.ceil(11 * W / display_w))
    font = _font(fs)
    lab_h = fs + 6
    line_h = tile + lab_h
    H = pad + len(neurons) * (lines_per_image * line_h + gap) - gap + pad
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    boxes = []

    def put(img: Image.Image, label: str, x: int, y: int) -> None:
        canvas.paste(img.convert("RGB").resize((tile, tile), Image.BILINEAR), (x, y))
        text = _fit_text(draw, label, font, tile - 2)
        if text:
            draw.text((x + 1, y + tile + 2), text, fill=(0, 0, 0), font=font)
            boxes.append(draw.textbbox((x + 1, y + tile + 2), text, font=font))

    for i, (x, label, r) in enumerate(zip(images, labels, neurons)):
        im = to_pil(x)
        d = ImageDraw.Draw(im)
        for (y0, x0, y1, x1) in r["boxes"].tolist():
            d.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 220, 0), width=2)
        top = pad + i * (lines_per_image * line_h + gap)
        put(im, label, pad, top)
        n_rules = len(r["proj"])
        for n in range(len(r["picks"])):
            line, g = divmod(n, groups)
            x0 = pad + tile + gap + g * (group_w + gap)
            y0 = top + line * line_h
            tiles = [to_pil(r["proj"][q][n]) for q in range(n_rules)] + [to_pil(r["patch"][n])]
            caps = [f"ch {int(r['picks'][n][0])}"] + [""] * (n_rules - 1) + [f"{float(r['values'][n]):.3g}"]
            for j, (t, cap) in enumerate(zip(tiles, caps)):
                put(t, cap, x0 + j * (tile + pad), y0)
    canvas.info["label_boxes"] = boxes
    return canvas


# ---------------------------------------------------------------------------------
# Writing, tiles and small pictures of the unit atlas and the DGN-AM pages


def image_tile(img: torch.Tensor | Image.Image, size: int = 160) -> Image.Image:
    """An image (tensor in [0, 1], any float dtype, or PIL) as a size×size PIL tile."""
    return to_pil(img.float() if isinstance(img, torch.Tensor) else img).resize((size, size))


def mark_box(t: torch.Tensor, box: Sequence[int], colour=(1.0, 0.85, 0.0), width: int = 2) -> torch.Tensor:
    """Outline ``box`` = (y0, x0, y1, x1) on a 3×H×W float image, in place (clipped to the image)."""
    y0, x0, y1, x1 = (int(v) for v in box)
    H, W = t.shape[1:]
    y0, x0, y1, x1 = max(0, y0), max(0, x0), min(H, y1), min(W, x1)
    if y1 <= y0 or x1 <= x0:
        return t
    c = torch.tensor(colour, dtype=t.dtype).view(3, 1, 1)
    for sl in ((slice(y0, min(y1, y0 + width)), slice(x0, x1)), (slice(max(y0, y1 - width), y1), slice(x0, x1)),
               (slice(y0, y1), slice(x0, min(x1, x0 + width))), (slice(y0, y1), slice(max(x0, x1 - width), x1))):
        t[:, sl[0], sl[1]] = c
    return t


def resize_tile(t: torch.Tensor, tile: int) -> torch.Tensor:
    """3×h×w float → 3×tile×tile (bilinear, antialiased), clipped to [0, 1]."""
    return F.interpolate(t[None].float(), size=(tile, tile), mode="bilinear", align_corners=False,
                         antialias=True)[0].clamp(0, 1)


def unit_tiles(crops: Sequence[torch.Tensor], tile: int, marks: Sequence[Sequence[int] | None] | None = None) -> torch.Tensor:
    """Crops (3×h×w in [0, 1]) → uint8 N×3×tile×tile; ``marks[i]``, when given, is a box
    outlined on crop ``i`` before it is resized."""
    tiles = []
    for i, crop in enumerate(crops):
        if marks is not None and marks[i] is not None:
            crop = mark_box(crop.clone(), marks[i])
        tiles.append(resize_tile(crop, tile))
    if not tiles:
        return torch.zeros(0, 3, tile, tile, dtype=torch.uint8)
    return (torch.stack(tiles) * 255 + 0.5).to(torch.uint8)


def tile_grid(tiles: torch.Tensor, ncols: int = 3, pad: int = 2) -> Image.Image:
    """uint8 N×3×t×t tiles pasted as they are in a white grid of ``ncols`` columns."""
    n = len(tiles)
    t = tiles.shape[-1] if n else 8
    nrows = max(1, (n + ncols - 1) // ncols)
    W = ncols * (t + pad) + pad
    H = nrows * (t + pad) + pad
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    for i in range(n):
        r, c = divmod(i, ncols)
        canvas.paste(Image.fromarray(tiles[i].permute(1, 2, 0).numpy()), (pad + c * (t + pad), pad + r * (t + pad)))
    return canvas


def thumbnail(tile: torch.Tensor, size: int) -> Image.Image:
    """One uint8 3×t×t tile as a size×size picture (bilinear)."""
    return Image.fromarray(tile.permute(1, 2, 0).numpy()).resize((size, size), Image.BILINEAR)


def _nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round tick values (1, 2, 2.5 or 5 × 10^k apart) inside [lo, hi]."""
    span = hi - lo
    if not span > 0:
        return [lo]
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9)
    return [round(i * step, 12) for i in range(first, math.floor(hi / step + 1e-9) + 1)]


def histogram_svg(counts: torch.Tensor, edges: torch.Tensor, width: int = 360, height: int = 150) -> tuple[str, float, float]:
    """Inline SVG bar chart of the non-empty bin range with labelled axes (x: the unit's maximum
    activation per photo, round ticks; y: number of photos, 0 and the tallest bar); returns
    (svg, lo, hi). Drawn on its own light card with dark text, so it reads in dark mode too."""
    nz = counts.nonzero().flatten()
    if len(nz) == 0:
        return "", 0.0, 0.0
    a, b = int(nz.min()), int(nz.max()) + 1
    c = counts[a:b].double()
    lo, hi = float(edges[a]), float(edges[b])
    top = float(c.max())
    ml, mr, mt, mb = 46, 10, 8, 38  # margins: y tick labels, right, top, x ticks + axis title
    pw, ph = width - ml - mr, height - mt - mb
    x0, y0 = ml, mt + ph  # plot origin (bottom left)

    def xs(v: float) -> float:
        return x0 + (v - lo) / (hi - lo) * pw

    bw = pw / len(c)
    bars = []
    for i, v in enumerate(c.tolist()):
        if v <= 0:
            continue
        h = max(1.0, v / top * ph)
        bars.append(f'<rect x="{x0 + i * bw:.1f}" y="{y0 - h:.1f}" width="{max(bw - 0.5, 0.5):.1f}" height="{h:.1f}"/>')
    zero = (f'<line x1="{xs(0.0):.1f}" x2="{xs(0.0):.1f}" y1="{mt}" y2="{y0}" stroke="#777" stroke-dasharray="3,3"/>'
            if lo < 0 < hi else "")
    lines, labels = [], []
    for t in _nice_ticks(lo, hi):
        x = xs(t)
        lines.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y0}" y2="{y0 + 4}"/>')
        labels.append(f'<text x="{x:.1f}" y="{y0 + 15}" text-anchor="middle">{t:g}</text>')
    for v in (0, top):
        y = y0 - v / top * ph
        lines.append(f'<line x1="{x0 - 4}" x2="{x0}" y1="{y:.1f}" y2="{y:.1f}"/>')
        labels.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{v:,.0f}</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'style="max-width:100%;height:auto" role="img" aria-label="histogram of the unit\'s maximum activation per photo">'
           f'<rect x="0" y="0" width="{width}" height="{height}" rx="4" fill="#f8f8f8"/>'
           f'<g fill="#3f51b5">{"".join(bars)}</g>{zero}'
           f'<g stroke="#333"><line x1="{x0}" x2="{x0 + pw}" y1="{y0}" y2="{y0}"/>'
           f'<line x1="{x0}" x2="{x0}" y1="{mt}" y2="{y0}"/>{"".join(lines)}</g>'
           f'<g fill="#222" font-family="sans-serif" font-size="11">{"".join(labels)}'
           f'<text x="{x0 + pw / 2:.1f}" y="{height - 5}" text-anchor="middle">maximum activation per photo</text>'
           f'<text transform="translate(12 {mt + ph / 2:.1f}) rotate(-90)" text-anchor="middle">photos</text>'
           f'</g></svg>')
    return svg, lo, hi
