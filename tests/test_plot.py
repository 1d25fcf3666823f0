"""reprkit.plot.embedding renders readable plots of many classes: legend outside the axes, distinct colours
(CIELAB distance computed here from the sRGB formulas), unique (colour, marker) beyond the palette, titles
that fit, string / float / torch labels, and clear errors for bad parameters."""

from __future__ import annotations

import numpy as np
import pytest

mpl = pytest.importorskip("matplotlib")
mpl.use("Agg")

from matplotlib.colors import to_rgb  # noqa: E402

from reprkit import plot  # noqa: E402
from reprkit.errors import InvalidParameterError, NonFiniteError, ShapeError  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def srgb_to_lab(rgb):
    """CIE L*a*b* (D65) of sRGB colours in [0, 1] (IEC 61966-2-1 and CIE 1976 formulas)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    eps = (6 / 29) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def min_delta_e(colours):
    lab = srgb_to_lab([to_rgb(c) for c in colours])
    d = np.sqrt(((lab[:, None] - lab[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return d.min()


def blobs(k, n_per=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-50, 50, size=(k, 2))
    labels = np.repeat(np.arange(k), n_per)
    return centres[labels] + rng.normal(size=(k * n_per, 2)), labels


def scatter_styles(fig):
    """(rgb, marker path vertices) of each scatter collection of the main axes."""
    ax = fig.axes[0]
    out = []
    for c in ax.collections:
        rgb = tuple(np.round(c.get_facecolor()[0][:3], 4))
        verts = np.round(c.get_paths()[0].vertices, 3).tobytes()
        out.append((rgb, verts))
    return out


def extents(fig):
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax = fig.axes[0]
    return ax.get_window_extent(r), ax.get_legend(), fig.bbox, r


@pytest.mark.parametrize("k", [2, 20, 50])
def test_legend_outside_axes_and_inside_figure(tmp_path, k):
    Y, lab = blobs(k)
    path = tmp_path / f"p{k}.png"
    fig = plot.embedding(Y, lab, path=str(path), title="t-SNE " * 40)
    assert path.read_bytes()[:4] == b"\x89PNG"
    ax_box, legend, fig_box, r = extents(fig)
    assert legend is not None and len(legend.get_texts()) == k
    lb = legend.get_window_extent(r)
    assert lb.x0 >= ax_box.x1 - 1e-6, (lb, ax_box)  # right of the axes: covers no point
    assert fig_box.x0 - 1 <= lb.x0 and lb.x1 <= fig_box.x1 + 1 and lb.y0 >= fig_box.y0 - 1 and lb.y1 <= fig_box.y1 + 1
    tb = fig.axes[0].title.get_window_extent(r)
    assert fig_box.x0 - 1 <= tb.x0 and tb.x1 <= fig_box.x1 + 1 and tb.y1 <= fig_box.y1 + 1, (tb, fig_box)
    assert fig.axes[0].title.get_text().count("\n") <= 2 and fig.axes[0].title.get_text().endswith("…")


@pytest.mark.parametrize("k", [10, 20, 30])
def test_colours_distinct(k):
    Y, lab = blobs(k)
    styles = scatter_styles(plot.embedding(Y, lab))
    colours = [s[0] for s in styles]
    assert len(set(colours)) == k
    assert min_delta_e(colours) >= 20.0  # ΔE76 ≈ 2.3 is a just-noticeable difference; 20 is plainly different
    for c in colours:  # visible on white: not near-white
        assert srgb_to_lab(c)[0] <= 85


def test_beyond_palette_every_class_has_its_own_style():
    Y, lab = blobs(50, n_per=5)
    styles = scatter_styles(plot.embedding(Y, lab))
    assert len(styles) == 50 and len(set(styles)) == 50
    assert len({s[1] for s in styles}) == 2  # two marker shapes for two rounds through the palette


def test_many_classes_fall_back_to_a_colour_map():
    Y, lab = blobs(plot.MAX_CATEGORICAL + 1, n_per=2)
    with pytest.warns(UserWarning, match="continuous colour map"):
        fig = plot.embedding(Y, lab)
    assert fig.axes[0].get_legend() is None


def test_string_mixed_and_torch_labels():
    Y, lab = blobs(3)
    names = np.array(["zebra", "ant", "moth"])[lab]
    fig = plot.embedding(Y, names)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["ant", "moth", "zebra"]
    mixed = np.array([1, "a", 2.5] * 20, dtype=object)
    fig = plot.embedding(Y, mixed)
    assert len(fig.axes[0].get_legend().get_texts()) == 3
    torch = pytest.importorskip("torch")
    fig = plot.embedding(torch.from_numpy(Y).float(), torch.from_numpy(lab))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["0", "1", "2"]


def test_float_labels_get_a_colour_bar_and_annotate_places_names():
    Y, lab = blobs(3)
    fig = plot.embedding(Y, lab + 0.5)
    assert len(fig.axes) == 2 and fig.axes[0].get_legend() is None  # axes + colour bar
    fig = plot.embedding(Y, lab.astype(np.float64), annotate=True)  # integer-valued floats are classes
    texts = {t.get_text(): t.xy for t in fig.axes[0].texts}
    assert set(texts) == {"0", "1", "2"}
    for c in range(3):
        np.testing.assert_allclose(texts[str(c)], np.median(Y[lab == c], axis=0))


@pytest.mark.parametrize(
    "kwargs,error,needle",
    [
        (dict(point_size=-1.0), InvalidParameterError, "point_size"),
        (dict(dpi=0), InvalidParameterError, "dpi"),
        (dict(title=3), InvalidParameterError, "title"),
        (dict(legend="yes"), InvalidParameterError, "booleans"),
        (dict(path="out.xyz"), InvalidParameterError, "unsupported plot format"),
        (dict(labels=np.arange(3)), ShapeError, "3 entries"),
    ],
)
def test_bad_parameters(kwargs, error, needle):
    Y, _ = blobs(2)
    with pytest.raises(error, match=needle):
        plot.embedding(Y, **kwargs)


def test_bad_embeddings():
    with pytest.raises(ShapeError, match="shape"):
        plot.embedding(np.zeros(5))
    with pytest.raises(NonFiniteError):
        plot.embedding(np.array([[0.0, np.nan], [1.0, 1.0]]))
    with pytest.raises(InvalidParameterError, match="dtype"):
        plot.embedding(np.array([["a", "b"]]))
