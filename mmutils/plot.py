"""The notebooks' small figures: image grids, training curves, spectrograms, heat maps and grouped bars.

Every function returns a :class:`matplotlib.figure.Figure` closed in ``pyplot``: it shows once as the value
of a notebook cell (or via ``display``) and never piles up in loops. ``dpi=90`` keeps stored notebooks small.
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .checks import check_float, check_instance, check_int, check_tensor, check_texts
from .train import History

__all__ = ["figure", "image_grid", "training_curves", "spectrogram_plot", "heatmap", "bar_table"]

DPI = 90


def figure(nrows: int = 1, ncols: int = 1, *, panel_size: tuple[float, float] = (3.2, 2.4),
           dpi: int = DPI, **subplots_kw) -> tuple[Figure, np.ndarray]:
    """A new figure with an ``nrows`` x ``ncols`` grid of axes, each about ``panel_size`` inches.

    Returns ``(fig, axes)`` where ``axes`` is always a 2-D array of shape
    ``(nrows, ncols)``. The figure is closed in ``pyplot`` (see the module note).
    """
    nrows, ncols = check_int("nrows", nrows, min=1), check_int("ncols", ncols, min=1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
                             dpi=dpi, squeeze=False, **subplots_kw)
    plt.close(fig)
    return fig, axes


# ---- Images ------------------------------------------------------------------
def _images_hwc(images) -> np.ndarray:
    """Images as a numpy array (n, H, W, C) with C in {1, 3}, float in [0, 1] or uint8."""
    is_tensor = isinstance(check_instance("images", images, (np.ndarray, torch.Tensor)), torch.Tensor)
    arr = images.detach().cpu() if is_tensor else images
    if arr.ndim == 3:  # (n, H, W)
        arr = arr[:, None] if is_tensor else arr[..., None]
    if arr.ndim != 4 or arr.shape[1 if is_tensor else -1] not in (1, 3) or arr.shape[0] == 0:
        raise ValueError(f"images must have shape (n, 3, H, W) or (n, 1, H, W) (tensor), (n, H, W, 3) or "
                         f"(n, H, W, 1) (array), or (n, H, W), with n > 0; got {tuple(images.shape)}")
    if is_tensor:
        arr = arr.permute(0, 2, 3, 1)
        arr = arr.numpy() if arr.dtype == torch.uint8 else arr.float().numpy()
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"images must be uint8 or float in [0, 1], got dtype {arr.dtype}")
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"images: float values must be in [0, 1], got range [{lo:.3g}, {hi:.3g}]")
    return np.clip(arr, 0.0, 1.0)


def image_grid(images, captions: Sequence[str] | None = None, ncols: int = 8, scale: float = 1.2,
               *, title: str | None = None, dpi: int = DPI) -> Figure:
    """A grid of images with optional captions under them.

    ``images``: uint8 numpy array ``(n, H, W, 3)`` (or ``(n, H, W)`` grey), or a
    float tensor ``(n, 3, H, W)`` / ``(n, 1, H, W)`` with values in [0, 1].
    ``captions``: ``n`` strings (wrapped to the cell width). Each image takes
    ``scale`` inches. Returns the figure, with exactly ``n`` axes.
    """
    arr = _images_hwc(images)
    n = arr.shape[0]
    ncols = min(check_int("ncols", ncols, min=1), n)
    scale = check_float("scale", scale, positive=True)
    if captions is not None and len(check_texts("captions", captions)) != n:
        raise ValueError(f"captions must have one string per image ({n}), got {len(captions)}")
    nrows = math.ceil(n / ncols)
    width = max(12, int(16 * scale))
    cap_h = 0.0 if captions is None else 0.05 + 0.14 * max(len(textwrap.wrap(c, width)) for c in captions)
    fig, axes = figure(nrows, ncols, panel_size=(scale, scale + cap_h), dpi=dpi)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.remove()
            continue
        img = arr[k]
        if img.shape[-1] == 1:
            ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255 if img.dtype == np.uint8 else 1,
                      interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set(xticks=[], yticks=[])
        if captions is not None:
            ax.set_xlabel("\n".join(textwrap.wrap(captions[k], width)), fontsize=7)
    if title is not None:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3)
    return fig


# ---- Curves ------------------------------------------------------------------
def filmstrips(columns: Sequence, row_labels: Sequence[str] | None = None,
               column_titles: Sequence[str] | None = None, *, frame_size: float = 0.6, dpi: int = DPI) -> Figure:
    """Clips side by side, one film strip per clip: ``columns`` holds one float tensor (n, T, 3, H, W) in [0, 1]
    per column (the same n in each), and row ``i`` of the figure shows clip ``i`` of every column, its T frames
    left to right with a white line between them. ``row_labels`` (n) go to the left of each row,
    ``column_titles`` above the columns; each frame takes ``frame_size`` inches."""
    check_instance("columns", columns, (list, tuple))
    if not columns:
        raise ValueError("columns must hold at least one tensor of clips")
    for clips in columns:
        check_tensor("columns[j]", clips, 5, size={0: len(columns[0]), 2: 3})
    n, frames = len(columns[0]), columns[0].shape[1]
    if row_labels is not None and len(check_texts("row_labels", row_labels)) != n:
        raise ValueError(f"row_labels must have one string per clip ({n}), got {len(row_labels)}")
    if column_titles is not None and len(check_texts("column_titles", column_titles)) != len(columns):
        raise ValueError(f"column_titles must have one string per column ({len(columns)}), got {len(column_titles)}")
    fig, axes = figure(n, len(columns), panel_size=(frame_size * frames, frame_size * 1.05), dpi=dpi)
    for j, clips in enumerate(columns):
        for i in range(n):
            framed = torch.nn.functional.pad(clips[i].detach().float().cpu(), (1, 1, 1, 1), value=1.0)
            strip = torch.cat(list(framed), dim=2).clamp(0, 1)  # (3, H + 2, T (W + 2))
            ax = axes[i, j]
            ax.imshow(strip.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if column_titles is not None and i == 0:
                ax.set_title(column_titles[j], fontsize=8)
            if row_labels is not None and j == 0:
                ax.set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    return fig


def _history_series(history) -> dict[str, tuple[list, list]]:
    """name -> (x, y) for a History: the loss, the extra metrics, the evaluation metrics."""
    series = {"loss": (list(history.steps), list(history.losses))} if history.losses else {}
    for name, values in history.metrics.items():
        series[name] = (list(history.steps), list(values))
    for name in history.eval_names():
        key = name if name not in series else f"eval {name}"
        series[key] = history.eval_series(name)
    return series


def _ema(values: list[float], smooth: float) -> np.ndarray:
    out = np.empty(len(values))
    acc = None
    for i, v in enumerate(values):
        acc = v if acc is None else smooth * acc + (1 - smooth) * v
        out[i] = acc
    return out


def training_curves(history_or_dict, keys: Sequence[str] | None = None, *, smooth: float = 0.0,
                    ncols: int = 3, dpi: int = DPI) -> Figure:
    """One small panel per logged quantity, against the training step.

    ``history_or_dict`` is one of:

    * a :class:`mmutils.train.History` (or its ``as_dict()``): panels for the
      loss, every extra metric and every evaluation metric;
    * a dict ``label -> History``: the same panels, one line per label (to compare runs);
    * a dict ``name -> list of numbers``: one panel per name, against the index.

    ``keys`` selects and orders the panels. ``smooth`` in [0, 1) draws an
    exponential moving average over the raw curve (evaluation curves are not smoothed).
    Returns the figure, with one axes per panel.
    """
    if isinstance(history_or_dict, Mapping) and {"steps", "losses", "metrics", "evals"} <= set(history_or_dict):
        d = history_or_dict
        history_or_dict = History(list(d["steps"]), list(d["losses"]), {k: list(v) for k, v in d["metrics"].items()},
                                  [(s, dict(m)) for s, m in d["evals"]], float(d.get("seconds", 0.0)))
    if isinstance(history_or_dict, History):
        runs = {"": _history_series(history_or_dict)}
        eval_names = set(history_or_dict.eval_names())
    elif isinstance(history_or_dict, Mapping):  # an empty dict has nothing to plot
        values = list(history_or_dict.values())
        if all(isinstance(v, History) for v in values):
            runs = {str(k): _history_series(v) for k, v in history_or_dict.items()}
            eval_names = set().union(*(v.eval_names() for v in values))
        else:
            runs = {"": {}}
            for name, v in history_or_dict.items():
                if isinstance(v, torch.Tensor):
                    v = v.detach().cpu().tolist()
                if isinstance(v, (str, bytes)) or not isinstance(v, (Sequence, np.ndarray)):
                    raise TypeError(f"history_or_dict[{name!r}] must be a list of numbers or a History, "
                                    f"got {type(v).__name__}")
                y = np.asarray(v, dtype=float)
                if y.ndim != 1:
                    raise ValueError(f"history_or_dict[{name!r}] must be 1-D, got shape {y.shape}")
                runs[""][str(name)] = (list(range(len(y))), list(y))
            eval_names = set()
    else:
        raise TypeError(f"history_or_dict must be a History or a dict, got {type(history_or_dict).__name__}")
    if check_float("smooth", smooth, min=0.0) >= 1:
        raise ValueError(f"smooth must be a number in [0, 1), got {smooth}")

    available: list[str] = []
    for series in runs.values():
        available += [k for k in series if k not in available]
    if keys is None:
        keys = available
    elif any(k not in available for k in check_texts("keys", keys)):
        raise ValueError(f"keys must name some of the logged values {available}, got {keys!r}")
    if not keys:
        raise ValueError("history_or_dict has nothing to plot (no logged values)")
    ncols = min(check_int("ncols", ncols, min=1), len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = figure(nrows, ncols, panel_size=(3.0, 2.2), dpi=dpi)
    for k, ax in enumerate(axes.flat):
        if k >= len(keys):
            ax.remove()
            continue
        name = keys[k]
        for i, (label, series) in enumerate(runs.items()):
            if name not in series:
                continue
            x, y = series[name]
            color = f"C{i}"
            is_eval = name in eval_names or name.startswith("eval ")
            if is_eval:
                ax.plot(x, y, "o-", color=color, ms=3, label=label or None)
            elif smooth > 0 and len(y) > 1:
                ax.plot(x, y, color=color, alpha=0.25, lw=0.8)
                ax.plot(x, _ema(y, smooth), color=color, lw=1.2, label=label or None)
            else:
                ax.plot(x, y, color=color, lw=1.0, label=label or None)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if len(runs) > 1 and k == 0:
            ax.legend(fontsize=7)
    fig.tight_layout(pad=0.4)
    return fig


# ---- Spectrograms, heat maps, bars -------------------------------------------
def _as_2d(name: str, value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().float().numpy()
    elif not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(value).__name__}")
    if value.ndim != 2 or value.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {tuple(value.shape)}")
    return value.astype(float)


def spectrogram_plot(spec, sample_rate: int, hop_length: int, ax: Axes | None = None,
                     *, title: str | None = None, dpi: int = DPI) -> Figure:
    """Draw a (log-magnitude) spectrogram with time in seconds and frequency in Hz.

    ``spec``: array or tensor of shape ``(freq_bins, frames)``, e.g. from
    :func:`mmutils.world.spectrogram` (``n_fft // 2 + 1`` bins from 0 to
    ``sample_rate / 2``). Draws into ``ax`` if given, else into a new figure.
    Returns the figure.
    """
    s = _as_2d("spec", spec)
    sample_rate = check_int("sample_rate", sample_rate, min=1)
    hop_length = check_int("hop_length", hop_length, min=1)
    own = ax is None
    ax = figure(1, 1, panel_size=(3.4, 2.2), dpi=dpi)[1][0, 0] if own else check_instance("ax", ax, Axes)
    fig = ax.figure
    duration = s.shape[1] * hop_length / sample_rate
    ax.imshow(s, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
              extent=(0.0, duration, 0.0, sample_rate / 2))
    ax.set_xlabel("time (s)", fontsize=8)
    ax.set_ylabel("frequency (Hz)", fontsize=8)
    ax.tick_params(labelsize=7)
    if title is not None:
        ax.set_title(title, fontsize=9)
    if own:
        fig.tight_layout(pad=0.4)
    return fig


def heatmap(matrix, row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
            title: str | None = None, *, annotate: bool | None = None, cmap: str = "viridis",
            vmin: float | None = None, vmax: float | None = None, colorbar: bool = True,
            dpi: int = DPI) -> Figure:
    """A heat map of a 2-D matrix, e.g. image-text similarities (rows: images, columns: texts).

    ``matrix``: array or tensor ``(rows, cols)``. Labels, if given, need one
    entry per row / column. ``annotate`` writes the values in the cells
    (default: when the matrix is at most 10 x 10). Returns the figure: one
    axes, plus one for the colour bar if ``colorbar``.
    """
    m = _as_2d("matrix", matrix)
    rows, cols = m.shape
    for name, labels, n in (("row_labels", row_labels, rows), ("col_labels", col_labels, cols)):
        if labels is not None and len(check_texts(name, labels)) != n:
            raise ValueError(f"{name} must have {n} entries (one per matrix row/column), got {len(labels)}")
    if annotate is None:
        annotate = rows <= 10 and cols <= 10
    w = min(8.0, 1.2 + 0.45 * cols + (1.2 if row_labels else 0))
    h = min(8.0, 0.9 + 0.4 * rows + (1.0 if col_labels else 0))
    fig, axes = figure(1, 1, panel_size=(w, h), dpi=dpi)
    ax = axes[0, 0]
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    if col_labels:
        ax.set_xticks(range(cols), col_labels, rotation=45, ha="right", fontsize=7)
    if row_labels:
        ax.set_yticks(range(rows), row_labels, fontsize=7)
    ax.tick_params(labelsize=7)
    if annotate:
        lo, hi = im.get_clim()
        mid = (lo + hi) / 2
        for i in range(rows):
            for j in range(cols):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if m[i, j] > mid else "white")
    if title is not None:
        ax.set_title(title, fontsize=9)
    if colorbar:
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        cb.ax.tick_params(labelsize=7)
    fig.tight_layout(pad=0.4)
    return fig


def bar_table(table: Mapping[str, Mapping[str, float]], *, title: str | None = None,
              ylabel: str = "accuracy", ylim: tuple[float, float] | None = None,
              annotate: bool = True, dpi: int = DPI) -> Figure:
    """Grouped bars for a table such as accuracy per question type per model.

    ``table`` maps a series name (one colour, e.g. a model) to a dict
    ``group -> value`` (one group of bars per key, e.g. a question type), e.g.
    ``{"late fusion": {"color": 0.9, "relation": 0.5}, "cross-attention": {...}}``.
    A group missing from a series is left empty. Returns the figure, with one axes.
    """
    check_instance("table", table, Mapping)
    groups: list[str] = []
    for name, row in table.items():
        for g, v in check_instance(f"table[{name!r}]", row, Mapping).items():
            check_float(f"table[{name!r}][{g!r}]", v.item() if isinstance(v, torch.Tensor) else v)
            if g not in groups:
                groups.append(g)
    if not groups:
        raise ValueError("table has no values (it or all its inner dicts are empty)")
    n_series = len(table)
    width = 0.8 / n_series
    x = np.arange(len(groups))
    fig, axes = figure(1, 1, panel_size=(min(9.0, 1.5 + 0.35 * len(groups) * max(2, n_series)), 2.6), dpi=dpi)
    ax = axes[0, 0]
    for i, (name, row) in enumerate(table.items()):
        vals = np.array([float(row[g]) if g in row else np.nan for g in groups])
        bars = ax.bar(x - 0.4 + width * (i + 0.5), vals, width, label=str(name), color=f"C{i}")
        if annotate:
            ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.2f}" for v in vals], fontsize=6, padding=1)
    ax.set_xticks(x, [str(g) for g in groups], fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if title is not None:
        ax.set_title(title, fontsize=9)
    if n_series > 1:
        ax.legend(fontsize=7, frameon=False, ncols=min(n_series, 4), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout(pad=0.4)
    return fig
