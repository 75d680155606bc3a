"""Rendering: tensors → pictures. No model code here, no page code here.

Conventions
- Pictures are saved as WebP (quality 85) or PNG through :func:`save_image`, atomically.
- Heatmaps are normalised by :func:`normalise_map`: divide by the 99th percentile of
  the map (per map), clip to [0, 1]. Signed maps use the 99th percentile of |map|
  and are shown on a diverging scale centred on 0.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .util import atomic_write_bytes

CMAP = "inferno"
DIVERGING = "RdBu_r"
PERCENTILE = 99.0


def to_pil(img: torch.Tensor | np.ndarray | Image.Image) -> Image.Image:
    """3×H×W or H×W×3 float in [0,1] (or uint8) → PIL RGB."""
    if isinstance(img, Image.Image):
        return img.convert("RGB")
    a = img.detach().float().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(a).convert("RGB")


def save_image(img, path: str | Path, quality: int = 85) -> Path:
    """Save atomically; format from the suffix (.webp, .png, .jpg)."""
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
    return atomic_write_bytes(path, buf.getvalue())


def save_figure(fig, path: str | Path) -> Path:
    """Save a matplotlib figure atomically (SVG or PNG by suffix) and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", bbox_inches="tight", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def normalise_map(m: torch.Tensor | np.ndarray, signed: bool = False, percentile: float = PERCENTILE) -> np.ndarray:
    """One map (H×W) → [0,1] (or [-1,1] if signed) by its own 99th percentile."""
    a = m.detach().float().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m, dtype=np.float32)
    scale = float(np.percentile(np.abs(a), percentile)) if a.size else 0.0
    if scale <= 0:
        scale = float(np.abs(a).max()) or 1.0
    a = a / scale
    return np.clip(a, -1.0, 1.0) if signed else np.clip(a, 0.0, 1.0)


def colourise(m01: np.ndarray, cmap: str = CMAP, signed: bool = False) -> np.ndarray:
    """Normalised map → H×W×3 float RGB."""
    from matplotlib import colormaps

    x = (m01 + 1.0) / 2.0 if signed else m01
    return colormaps[cmap](x)[..., :3]


def heatmap_image(m, size: int | None = None, cmap: str = CMAP, signed: bool = False) -> Image.Image:
    rgb = colourise(normalise_map(m, signed), cmap, signed)
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
        words, lines, line = str(text).split(), [], ""
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
        for k, line in enumerate(wrap(text, tile, 2)):
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
