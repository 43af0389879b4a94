"""Tests of the plotting helpers (rendered with the Agg backend)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mmutils.plot import (  # noqa: E402
    bar_table,
    figure,
    filmstrips,
    heatmap,
    image_grid,
    spectrogram_plot,
    training_curves,
)
from mmutils.train import History  # noqa: E402


def _render(fig):
    fig.canvas.draw()
    return fig


def _history():
    return History(steps=[1, 2, 3, 4], losses=[1.0, 0.8, 0.5, 0.4], metrics={"acc": [0.1, 0.2, 0.4, 0.6]},
                   evals=[(2, {"val_acc": 0.3}), (4, {"val_acc": 0.7})], seconds=1.0)


def test_figure_shape_dpi_and_closed():
    before = plt.get_fignums()
    fig, axes = figure(2, 3, dpi=80)
    assert isinstance(fig, Figure) and axes.shape == (2, 3) and fig.dpi == 80
    assert plt.get_fignums() == before  # not left open in pyplot
    with pytest.raises(ValueError, match="nrows"):
        figure(0, 1)


def test_image_grid_uint8_and_tensor():
    imgs = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    fig = _render(image_grid(imgs, captions=[f"a red circle number {i}" for i in range(5)], ncols=3))
    assert len(fig.axes) == 5 and fig.dpi == 90
    fig = _render(image_grid(torch.rand(10, 3, 8, 8), ncols=4, title="t"))
    assert len(fig.axes) == 10
    assert len(_render(image_grid(torch.rand(3, 1, 8, 8))).axes) == 3  # grey
    assert len(_render(image_grid(np.zeros((2, 8, 8), dtype=np.uint8))).axes) == 2


def test_image_grid_bad_input():
    with pytest.raises(ValueError, match="images"):
        image_grid(torch.rand(2, 4, 8, 8))
    with pytest.raises(ValueError, match=r"images.*\[0, 1\]"):
        image_grid(torch.rand(2, 3, 8, 8) * 255)
    with pytest.raises(TypeError, match="images"):
        image_grid(np.zeros((2, 8, 8, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="captions"):
        image_grid(torch.rand(2, 3, 8, 8), captions=["one"])


def test_training_curves_history_dict_and_comparison():
    h = _history()
    assert len(_render(training_curves(h)).axes) == 3  # loss, acc, val_acc
    assert len(_render(training_curves(h.as_dict(), smooth=0.5)).axes) == 3
    assert len(_render(training_curves(h, keys=["val_acc"])).axes) == 1
    assert len(_render(training_curves({"a": h, "b": h}, keys=["loss", "val_acc"])).axes) == 2
    assert len(_render(training_curves({"x": [1, 2, 3], "y": torch.tensor([3.0, 2.0])})).axes) == 2


def test_training_curves_bad_input():
    with pytest.raises(TypeError, match="history_or_dict"):
        training_curves([1, 2, 3])
    with pytest.raises(ValueError, match="keys"):
        training_curves(_history(), keys=["nope"])
    with pytest.raises(ValueError, match="smooth"):
        training_curves(_history(), smooth=1.0)
    with pytest.raises(ValueError, match="nothing to plot"):
        training_curves(History())


def test_spectrogram_plot_new_and_given_axes():
    spec = torch.rand(129, 60)
    fig = _render(spectrogram_plot(spec, 8000, 64, title="tone"))
    assert len(fig.axes) == 1
    x0, x1, y0, y1 = fig.axes[0].images[0].get_extent()
    assert (x1, y1) == pytest.approx((60 * 64 / 8000, 4000))
    fig2, axes = figure(1, 2)
    assert spectrogram_plot(spec.numpy(), 8000, 64, ax=axes[0, 1]) is fig2


def test_spectrogram_plot_bad_input():
    with pytest.raises(ValueError, match="spec"):
        spectrogram_plot(torch.rand(2, 129, 60), 8000, 64)
    with pytest.raises(TypeError, match="spec"):
        spectrogram_plot([[1.0]], 8000, 64)


def test_heatmap_axes_and_labels():
    m = torch.eye(4)
    fig = _render(heatmap(m, row_labels=list("abcd"), col_labels=list("wxyz"), title="sim"))
    assert len(fig.axes) == 2  # the map and its colour bar
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list("abcd")
    assert len(ax.texts) == 16
    fig = _render(heatmap(np.random.rand(20, 30), colorbar=False))
    assert len(fig.axes) == 1 and len(fig.axes[0].texts) == 0


def test_heatmap_bad_input():
    with pytest.raises(TypeError, match="matrix"):
        heatmap("abc")
    with pytest.raises(ValueError, match="row_labels"):
        heatmap(torch.rand(2, 3), row_labels=["a"])


def test_bar_table_groups_and_series():
    table = {"late fusion": {"color": 0.9, "shape": 0.8, "relation": 0.5},
             "cross-attention": {"color": 0.95, "relation": 0.9}}
    fig = _render(bar_table(table, title="accuracy", ylim=(0, 1)))
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["color", "shape", "relation"]
    assert len(ax.patches) == 6  # the missing "shape" bar is an empty (NaN) bar
    assert len(_render(bar_table({"only": {"a": torch.tensor(0.5)}})).axes) == 1


def test_bar_table_bad_input():
    with pytest.raises(TypeError, match="table"):
        bar_table([1, 2])
    with pytest.raises(ValueError, match="no values"):
        bar_table({"m": {}})


def test_filmstrips_one_row_per_clip_and_bad_inputs():
    clips = torch.rand(3, 4, 3, 8, 8)
    fig = filmstrips([clips, clips.flip(1)], [f"clip {i}" for i in range(3)], ["a", "b"])
    assert len(fig.axes) == 6
    assert fig.axes[0].get_images()[0].get_array().shape == (10, 40, 3)  # four 8x8 frames, each framed by 1
    with pytest.raises(ValueError, match="columns"):
        filmstrips([])
    with pytest.raises(ValueError, match="columns"):
        filmstrips([clips, clips[:2]])
    with pytest.raises(ValueError, match="row_labels"):
        filmstrips([clips], ["one"])
    with pytest.raises(TypeError, match="columns"):
        filmstrips(clips)
