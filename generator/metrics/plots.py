"""Figures for the findings: matplotlib, labelled axes, deterministic SVG/PNG bytes.

Every function takes plain numbers (NumPy / tensors) and a path; files are written
atomically and only when their bytes change (so rebuilding with nothing changed
leaves them alone).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from ..util import atomic_write_bytes, download_pdf, download_png, matplotlib_bytes, write_bytes_if_changed

METRIC_LABELS = {"spearman": "Spearman rank corr. of |map|", "ssim": "SSIM", "hog": "HOG similarity"}
#: the randomisation check's similarities of the signed maps (Adebayo et al.: rank correlation without ABS)
SIGNED_LABELS = {"spearman": "Spearman, signed maps", "ssim": "SSIM, signed maps", "hog": "HOG, signed maps"}
RANDOM_NOTE = "random weights: sanity check only"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: at save time only (a global setting would change every later figure of the process, e.g. the colour bar
#: an attribution stage draws after a findings stage in the same process): stable element ids; text stays
#: text (small, fast, searchable)
SVG_RC = {"svg.hashsalt": "cnnvis-findings", "svg.fonttype": "none"}


def save(fig, path: str | Path) -> Path:
    """Save atomically (SVG, PNG or WebP by suffix), without a timestamp; skip identical bytes. An SVG
    under a figures folder gets its PDF twin (the download for LaTeX), a WebP with a download line
    its PNG twin."""
    plt = _plt()
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    raster = "png" if fmt == "webp" else fmt
    try:
        data = matplotlib_bytes(fig, raster, SVG_RC)
        pdf = download_pdf(path)
        if pdf is not None:
            write_bytes_if_changed(pdf, matplotlib_bytes(fig, "pdf"))
    finally:
        plt.close(fig)
    if fmt == "webp":  # photos-like grids: much smaller than PNG
        from PIL import Image

        png = download_png(path)
        if png is not None:  # the lossless twin behind the figure's download link
            write_bytes_if_changed(png, data)
        out = io.BytesIO()
        Image.open(io.BytesIO(data)).convert("RGB").save(out, "WEBP", quality=85, method=4)
        data = out.getvalue()
    if path.is_file() and path.read_bytes() == data:
        return path
    return atomic_write_bytes(path, data)


def _colours(n: int):
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def _mean_sem(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over the last axis (images)."""
    a = np.asarray(a, dtype=np.float64)
    m = a.mean(-1)
    n = a.shape[-1]
    sem = a.std(-1, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(m)
    return m, sem


def cascade_curves(path, step_labels: Sequence[str], curves: dict[str, dict[str, np.ndarray]],
                   titles: dict[str, str], model_title: str, threshold: float | None = None,
                   metrics: Sequence[str] = ("spearman", "ssim", "hog")) -> Path:
    """One panel per metric; one line per method: mean over images ± standard error.

    ``curves[method][metric]``: S×B similarities for the cascade steps (the trained
    model itself, similarity 1, is drawn as the first point). A method with
    ``curves[method][metric + "_signed"]`` (the signed maps) gets a dashed line of the same
    colour in that panel too.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), sharey=True, squeeze=False)
    x = np.arange(len(step_labels) + 1)
    labels = ["trained", *step_labels]
    signed = False
    for ax, metric in zip(axes[0], metrics):
        for (name, c), col in zip(curves.items(), _colours(len(curves))):
            m, s = _mean_sem(c[metric])
            m, s = np.concatenate([[1.0], m]), np.concatenate([[0.0], s])
            ax.plot(x, m, marker="o", ms=3, color=col, label=titles.get(name, name))
            ax.fill_between(x, m - s, m + s, color=col, alpha=0.15, lw=0)
            if c.get(f"{metric}_signed") is not None:
                m, s = _mean_sem(c[f"{metric}_signed"])
                m, s = np.concatenate([[1.0], m]), np.concatenate([[0.0], s])
                ax.plot(x, m, marker="^", ms=3, color=col, ls="--", lw=1)
                ax.fill_between(x, m - s, m + s, color=col, alpha=0.08, lw=0)
                signed = True
        if threshold is not None and metric == "spearman":
            ax.axhline(threshold, color="k", ls=":", lw=1)
            ax.text(x[-1], threshold, f" flag ≥ {threshold:g}", va="bottom", ha="right", fontsize=7)
        ax.axhline(0, color="0.6", lw=0.6)
        ax.set_xticks(x, labels, rotation=40, ha="right", fontsize=8)
        ax.set_xlabel("layers re-initialised, top down (cumulative)")
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=10)
        ax.set_ylim(-0.3, 1.05)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("similarity to the trained model's map (unitless)")
    if signed:
        axes[0][-1].plot([], [], color="0.3", ls="--", marker="^", ms=3, lw=1, label="dashed: signed maps")
    axes[0][-1].legend(fontsize=7, loc="lower left", framealpha=0.8)
    fig.suptitle(f"{model_title}: cascading randomisation ({RANDOM_NOTE})", fontsize=11)
    fig.tight_layout()
    return save(fig, path)


def cascade_maps(path, step_labels: Sequence[str], rows: dict[str, np.ndarray], titles: dict[str, str],
                 model_title: str, image_title: str) -> Path:
    """Grid of heatmaps: one row per method, columns = trained + each cascade step.

    ``rows[method]``: (S+1)×t×t maps (trained first); each map scaled by its own
    99th percentile (so a map that is all zeros stays black).
    """
    plt = _plt()
    names = list(rows)
    ncol = len(step_labels) + 1
    fig, axes = plt.subplots(len(names), ncol, figsize=(1.35 * ncol + 1.2, 1.35 * len(names) + 0.6), squeeze=False)
    for r, name in enumerate(names):
        for c in range(ncol):
            ax = axes[r][c]
            m = np.asarray(rows[name][c], dtype=np.float32)
            q = np.percentile(m, 99) if m.size else 0.0
            q = q if q > 0 else (m.max() if m.max() > 0 else 1.0)
            ax.imshow(np.clip(m / q, 0, 1), cmap="inferno", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(["trained", *step_labels][c], fontsize=7)
            if c == 0:
                ax.set_ylabel(titles.get(name, name), fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"{model_title}, {image_title}: maps as layers are re-initialised ({RANDOM_NOTE})", fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def method_cascade(path, step_labels: Sequence[str], curves: dict[str, np.ndarray], method_title: str,
                   model_title: str, threshold: float | None = None,
                   metrics: Sequence[str] = ("spearman", "ssim", "hog")) -> Path:
    """One method on one model: a line per similarity metric (mean ± standard error over photos); for the
    signed maps (``curves[metric + "_signed"]``, where present) a thinner dotted line of the same colour."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    x = np.arange(len(step_labels) + 1)
    for metric, col, ls in zip(metrics, ("#4477aa", "#ee6677", "#228833"), ("-", "--", "-.")):
        m, s = _mean_sem(curves[metric])
        m, s = np.concatenate([[1.0], m]), np.concatenate([[0.0], s])
        ax.plot(x, m, marker="o", ms=3, color=col, ls=ls, label=METRIC_LABELS.get(metric, metric))
        ax.fill_between(x, m - s, m + s, color=col, alpha=0.15, lw=0)
        if curves.get(f"{metric}_signed") is not None:
            m, s = _mean_sem(curves[f"{metric}_signed"])
            m, s = np.concatenate([[1.0], m]), np.concatenate([[0.0], s])
            ax.plot(x, m, marker="^", ms=3, color=col, ls=":", lw=1, label=SIGNED_LABELS.get(metric, metric))
    if threshold is not None:
        ax.axhline(threshold, color="k", ls=":", lw=1)
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_xticks(x, ["trained", *step_labels], rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("layers re-initialised, top down (cumulative)")
    ax.set_ylabel("similarity to the trained map (unitless)")
    ax.set_ylim(-0.3, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", framealpha=0.8)
    ax.set_title(f"{method_title}, {model_title} ({RANDOM_NOTE})", fontsize=9)
    return save(fig, path)


def class_bars(path, methods: Sequence[str], second: np.ndarray, low: np.ndarray, titles: dict[str, str],
               model_title: str, low_rank: int, threshold: float) -> Path:
    """Grouped bars: rank correlation of the top-1 map with the 2nd-class / low-class map.

    ``second``, ``low``: M×B values; bars show the mean, whiskers the standard error.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(methods) + 2), 3.6))
    x = np.arange(len(methods))
    for off, data, lab, col in ((-0.2, second, "top-1 vs 2nd class", "#4477aa"),
                                (0.2, low, f"top-1 vs class ranked {low_rank}", "#ee6677")):
        m, s = _mean_sem(data)
        ax.bar(x + off, m, width=0.38, yerr=s, color=col, label=lab, capsize=2)
    ax.axhline(threshold, color="k", ls=":", lw=1, label=f"flag threshold ({threshold:g})")
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_xticks(x, [titles.get(m, m) for m in methods], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("Spearman rank corr. of |map| (unitless)")
    ax.set_xlabel("method (bars: mean over photos, whiskers: ± standard error)", fontsize=8)
    lo = float(np.nanmin([np.min(second), np.min(low), 0.0]))
    ax.set_ylim(min(-0.2, lo - 0.1), 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{model_title}: does the map change with the class explained?", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def faithfulness_curves(path, fractions: np.ndarray, curves: dict[str, dict[str, np.ndarray]],
                        titles: dict[str, str], model_title: str, baselines: Sequence[str] = ("random", "centre")) -> Path:
    """Deletion and insertion panels: mean probability curve per method (baselines dashed)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9), sharey=True)
    names = [n for n in curves if n not in baselines]
    cols = dict(zip(names, _colours(len(names))))
    for ax, kind, verb in ((axes[0], "deletion", "deleted"), (axes[1], "insertion", "inserted")):
        for n in [*names, *[b for b in baselines if b in curves]]:
            m = np.asarray(curves[n][kind], dtype=np.float64).mean(0)
            if n in baselines:
                ax.plot(fractions, m, color="k", ls="--" if n == "random" else ":", lw=1.4, label=titles.get(n, n))
            else:
                ax.plot(fractions, m, color=cols[n], lw=1.2, label=titles.get(n, n))
        ax.set_xlabel(f"fraction of pixels {verb}, most important first")
        what = "pixels set to the baseline colour" if kind == "deletion" else "pixels copied into a blurred copy"
        ax.set_title(f"{kind}: {what}\n({'lower' if kind == 'deletion' else 'higher'} area is better)", fontsize=9)
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("softmax probability of the explained class")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"{model_title}: deletion and insertion curves (mean over images)", fontsize=11)
    fig.tight_layout()
    return save(fig, path)


def interval_bars(path, labels: Sequence[str], series: dict[str, Sequence[tuple[float, float, float]]],
                  title: str, ylabel: str, threshold: float | None = None, ylim=(-0.2, 1.05)) -> Path:
    """Grouped bars with 95 % bootstrap intervals: ``series`` = legend label → one
    (mean, lo, hi) per label."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(labels) + 2), 3.6))
    x = np.arange(len(labels))
    k = max(1, len(series))
    width = 0.8 / k
    for j, ((lab, vals), col) in enumerate(zip(series.items(), _colours(k))):
        v = np.asarray(vals, dtype=np.float64).reshape(-1, 3)
        err = np.abs(np.stack([v[:, 0] - v[:, 1], v[:, 2] - v[:, 0]]))
        err = np.nan_to_num(err)
        ax.bar(x - 0.4 + width * (j + 0.5), v[:, 0], width=width * 0.95, yerr=err, color=col, label=lab, capsize=2)
    if threshold is not None:
        ax.axhline(threshold, color="k", ls=":", lw=1, label=f"threshold ({threshold:g})")
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_xlabel("method (bars: mean over photos, whiskers: 95 % bootstrap interval)", fontsize=8)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def selectivity_scatter(path, layers: dict[str, tuple], title: str) -> Path:
    """Per catalogued layer, one point per unit: class selectivity (x) against the cost of ablating the
    unit alone (y) — left, the drop in the true class's probability over all photos (Morcos et al.);
    right, when the layer has it, the largest drop in one class's accuracy (Zhou et al.'s per-class
    ablation). ``layers``: layer → (selectivity, probability drop[, largest per-class accuracy drop])."""
    plt = _plt()
    per_class = any(len(v) > 2 and v[2] is not None and np.asarray(v[2]).size for v in layers.values())
    fig, axes = plt.subplots(1, 2 if per_class else 1, figsize=(9.6 if per_class else 6.0, 3.8), squeeze=False)
    panels = [(1, "drop of true-class probability (all photos)")]
    if per_class:
        panels.append((2, "largest drop of one class's accuracy"))
    for ax, (k, ylabel) in zip(axes[0], panels):
        for (layer, vals), col in zip(layers.items(), _colours(len(layers))):
            if len(vals) > k and vals[k] is not None and np.asarray(vals[k]).size:
                ax.scatter(np.asarray(vals[0]), np.asarray(vals[k]), s=14, color=col, label=layer, alpha=0.8)
        ax.axhline(0, color="0.6", lw=0.6)
        ax.set_xlabel("class selectivity index (0 = responds to every class alike, 1 = to one)", fontsize=8)
        ax.set_ylabel(f"ablation cost: {ylabel}", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="layer", title_fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)
