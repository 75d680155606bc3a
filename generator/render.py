"""Rendering: tensors → pictures. No model code here, no page code here.

Conventions
- Pictures are saved as WebP (quality 85) or PNG through :func:`save_image`, atomically,
  and only when the bytes change (stable mtimes for ``mkdocs serve``).
- One display rule, :func:`normalise_maps`: each map is divided by the 99th percentile of
  its absolute value and clipped to [0, 1] (signed maps: to [-1, 1]). Heatmaps are then
  coloured (:func:`heatmap_image`); signed pixel-space attributions are shown as images
  with grey = 0 (:func:`signed_to_rgb`).
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .receptive_field import crop_patch
from .util import atomic_write_bytes, write_bytes_if_changed

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


def save_image(img, path: str | Path, quality: int = 85) -> Path:
    """Save atomically, and only when the bytes differ from the file there (stable mtimes for
    ``mkdocs serve``); format from the suffix (.webp, .png, .jpg)."""
    path = Path(path)
    pil = to_pil(img)
    buf = io.BytesIO()
    suffix = path.suffix.lower()
    if suffix == ".webp":
        pil.save(buf, "WEBP", quality=quality, method=4)
    elif suffix == ".png":
        pil.save(buf, "PNG", optimize=True)
    elif suffix in (".jpg", ".jpeg"):
        pil.save(buf, "JPEG", quality=quality, optimize=True)
    else:
        raise ValueError(f"unsupported figure format {suffix!r}")
    write_bytes_if_changed(path, buf.getvalue())
    return path


def save_figure(fig, path: str | Path) -> Path:
    """Save a matplotlib figure atomically (SVG or PNG by suffix) and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fmt = Path(path).suffix.lstrip(".") or "png"
    # no timestamp and fixed element ids: the same figure gives the same bytes in every build
    with plt.rc_context({"svg.hashsalt": "cnnvis"}):
        fig.savefig(buf, format=fmt, bbox_inches="tight", dpi=110,
                    metadata={"Date": None} if fmt == "svg" else {"Software": None} if fmt == "png" else {})
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


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
    """A table of pictures: ``rows[r][c]`` resized to ``tile``, column labels on top (wrapped to two
    lines), row labels on the left (wrapped to fit the tile's height)."""
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
            canvas.paste(t.convert("RGB").resize((tile, tile), Image.BILINEAR), (label_w + pad + c * (tile + pad), y))
    return canvas


def colour_bar(path: str | Path, label: str, cmap: str = CMAP, signed: bool = False, ticks=None) -> Path:
    """A small horizontal colour bar with a label (SVG or PNG by suffix)."""
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
    return save_figure(fig, path)


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


def neuron_figure(images: Sequence[torch.Tensor], labels: Sequence[str], neurons: Sequence[dict], tile: int) -> Image.Image | None:
    """Zeiler & Fergus-style figure: one row per image — the image with the units'
    receptive fields outlined in yellow, then per unit its projection tiles and the image
    patch. ``neurons[i]``: ``picks`` (k×3: channel, y, x), ``values``, ``boxes`` (k×4,
    y0 x0 y1 x1), ``proj`` (rules×k×3×tile×tile uint8) and ``patch`` (k×3×tile×tile
    uint8). Rows with fewer units are padded with white. None when there is nothing to draw."""
    tiles, captions = [], []
    k = max((len(r["picks"]) for r in neurons), default=0)
    for x, label, r in zip(images, labels, neurons):
        im = to_pil(x)
        d = ImageDraw.Draw(im)
        for (y0, x0, y1, x1) in r["boxes"].tolist():
            d.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 220, 0), width=2)
        tiles.append(im)
        captions.append(label)
        n_rules = len(r["proj"])
        for n in range(k):
            if n < len(r["picks"]):
                tiles += [to_pil(r["proj"][q][n]) for q in range(n_rules)] + [to_pil(r["patch"][n])]
                captions += [f"ch {int(r['picks'][n][0])}"] + [""] * (n_rules - 1) + [f"{float(r['values'][n]):.3g}"]
            else:
                tiles += [Image.new("RGB", (tile, tile), (255, 255, 255))] * (n_rules + 1)
                captions += [""] * (n_rules + 1)
    if not tiles:
        return None
    per = (len(neurons[0]["proj"]) + 1) if neurons else 2
    return grid(tiles, 1 + per * k, tile + 16, labels=captions)


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


def histogram_svg(counts: torch.Tensor, edges: torch.Tensor, width: int = 320, height: int = 90) -> tuple[str, float, float]:
    """Inline SVG bar chart of the non-empty bin range; returns (svg, lo, hi)."""
    nz = counts.nonzero().flatten()
    if len(nz) == 0:
        return "", 0.0, 0.0
    a, b = int(nz.min()), int(nz.max()) + 1
    c = counts[a:b].double()
    lo, hi = float(edges[a]), float(edges[b])
    n = len(c)
    bw = width / n
    top = float(c.max())
    zero_x = (0.0 - lo) / (hi - lo) * width if lo < 0 < hi else None
    bars = []
    for i, v in enumerate(c.tolist()):
        if v <= 0:
            continue
        h = max(1.0, v / top * (height - 2))
        bars.append(f'<rect x="{i * bw:.1f}" y="{height - h:.1f}" width="{max(bw - 0.5, 0.5):.1f}" height="{h:.1f}"/>')
    zero = (f'<line x1="{zero_x:.1f}" x2="{zero_x:.1f}" y1="0" y2="{height}" stroke="#999" stroke-dasharray="2,2"/>'
            if zero_x is not None else "")
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'role="img" aria-label="histogram of per-image maximum activation">'
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="none" stroke="#ccc"/>'
           f'<g fill="#3f51b5">{"".join(bars)}</g>{zero}</svg>')
    return svg, lo, hi
