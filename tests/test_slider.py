"""Properties of dgm.slider: the static strip holds one frame per value and shows one; the live
widget draws each value once, when first asked for."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dgm.book import STATIC_SITE_ENV  # noqa: E402
from dgm.slider import StaticSlider, slider  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(html: str, name: str) -> list[dict]:
    p = _Tags()
    p.feed(html)
    return [a for t, a in p.tags if t == name]


class _Recorder:
    """draw(v): a figure whose content depends on v; records every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, v):
        self.calls.append(v)
        fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
        ax.plot([0, 1], [0, float(v)])
        ax.set_ylim(-4, 4)
        return fig


def _pixels(png: bytes) -> np.ndarray:
    return mpimg.imread(io.BytesIO(png), format="png")


def _render(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


VALUES = [0.5, 1.0, 2.0, -3.0]


def test_static_slider_has_one_range_input_and_one_frame_per_value():
    draw = _Recorder()
    s = slider(draw, VALUES, label="K", start=2, static=True)
    assert isinstance(s, StaticSlider)
    html = s._repr_html_()
    inputs = _tags(html, "input")
    assert len(inputs) == 1
    r = inputs[0]
    assert r["type"] == "range"
    assert (int(r["min"]), int(r["max"]), int(r["step"]), int(r["value"])) == (0, len(VALUES) - 1, 1, 2)
    imgs = _tags(html, "img")
    assert len(imgs) == len(VALUES)
    visible = [k for k, im in enumerate(imgs) if "display:none" not in im.get("style", "").replace(" ", "")]
    assert visible == [2]
    assert draw.calls == VALUES  # every frame drawn once, up front


def test_static_slider_labels_are_the_formatted_values():
    values = [1, 2, 10, 0.1, 0.25, 1 / 3, 1234567.0]
    s = slider(_Recorder(), values, label="sigma", static=True)
    html = s._repr_html_()
    expected = [str(v) if isinstance(v, int) else f"{v:.4g}" for v in values]
    assert [im["data-label"] for im in _tags(html, "img")] == expected
    div = _tags(html, "div")[0]
    assert json.loads(div["data-values"]) == expected


def test_static_frames_are_the_pngs_of_the_drawn_figures():
    s = slider(_Recorder(), VALUES, static=True)
    imgs = _tags(s._repr_html_(), "img")
    pngs = []
    for im in imgs:
        prefix = "data:image/png;base64,"
        assert im["src"].startswith(prefix)
        png = base64.b64decode(im["src"][len(prefix):])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        pngs.append(png)
    draw = _Recorder()
    for png, v in zip(pngs, VALUES):  # frame k shows draw(values[k])
        assert np.array_equal(_pixels(png), _pixels(_render(draw(v))))
    pixels = [_pixels(p) for p in pngs]
    assert all(not np.array_equal(a, b) for i, a in enumerate(pixels) for b in pixels[i + 1:])


def test_static_slider_closes_the_figures_it_draws():
    plt.close("all")
    slider(_Recorder(), VALUES, static=True)
    assert plt.get_fignums() == []


def test_static_slider_escapes_its_label():
    html = slider(_Recorder(), [1], label='a<b "c"', static=True)._repr_html_()
    assert '<b "c"' not in html
    assert _tags(html, "input")[0]["aria-label"] == 'a<b "c"'


def test_static_none_follows_the_site_build(monkeypatch):
    import ipywidgets

    monkeypatch.setenv(STATIC_SITE_ENV, "1")
    assert isinstance(slider(_Recorder(), VALUES), StaticSlider)
    monkeypatch.delenv(STATIC_SITE_ENV)
    assert isinstance(slider(_Recorder(), VALUES), ipywidgets.VBox)
    monkeypatch.setenv(STATIC_SITE_ENV, "0")
    assert isinstance(slider(_Recorder(), VALUES), ipywidgets.VBox)


def test_static_argument_overrides_the_environment(monkeypatch):
    import ipywidgets

    monkeypatch.setenv(STATIC_SITE_ENV, "1")
    assert isinstance(slider(_Recorder(), VALUES, static=False), ipywidgets.VBox)
    monkeypatch.delenv(STATIC_SITE_ENV)
    assert isinstance(slider(_Recorder(), VALUES, static=True), StaticSlider)


def test_live_slider_draws_each_value_once_when_first_shown(capsys):
    import ipywidgets

    draw = _Recorder()
    box = slider(draw, VALUES, label="K", start=1, static=False)
    assert isinstance(box, ipywidgets.VBox)
    control = box.children[0]
    assert isinstance(control, ipywidgets.SelectionSlider)
    assert control.description == "K"
    assert [lab for lab, _ in control.options] == [f"{v:.4g}" for v in VALUES]
    assert draw.calls == [VALUES[1]]  # only the start value, lazily
    control.value = 3
    assert draw.calls == [VALUES[1], VALUES[3]]
    control.value = 1  # cached: no redraw
    control.value = 3
    assert draw.calls == [VALUES[1], VALUES[3]]
    control.value = 0
    assert draw.calls == [VALUES[1], VALUES[3], VALUES[0]]
    assert sorted(box.dgm_frames) == [0, 1, 3]
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in box.dgm_frames.values())
    assert plt.get_fignums() == []


@pytest.mark.parametrize("static", [True, False])
def test_draw_must_return_a_figure(static):
    with pytest.raises(TypeError, match="Figure"):
        slider(lambda v: plt.plot([0, v]), VALUES, static=static)


@pytest.mark.parametrize("static", [True, False])
def test_empty_values_raise(static):
    with pytest.raises(ValueError):
        slider(_Recorder(), [], static=static)


@pytest.mark.parametrize("start", [-1, len(VALUES), 100])
def test_start_must_index_values(start):
    draw = _Recorder()
    with pytest.raises(ValueError):
        slider(draw, VALUES, start=start, static=True)
    assert draw.calls == []


def test_values_may_be_any_iterable():
    s = slider(_Recorder(), (v for v in VALUES), static=True)
    assert len(_tags(s._repr_html_(), "img")) == len(VALUES)


def test_static_frames_shrink_to_the_text_column():
    class Imgs(HTMLParser):
        def __init__(self):
            super().__init__()
            self.styles = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.styles.append(dict(attrs).get("style", ""))

    parser = Imgs()
    parser.feed(StaticSlider(["AAAA", "BBBB"], ["1", "2"], "x")._repr_html_())
    assert len(parser.styles) == 2 and all("max-width:100%" in s for s in parser.styles)
    assert "display:none" not in parser.styles[0] and "display:none" in parser.styles[1]
