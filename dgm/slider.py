"""One call for a slider that works for every reader.

``slider(draw, values)`` shows the figure ``draw(v)`` for a value ``v`` chosen with a slider:

* in Jupyter or Colab it returns a live ``ipywidgets`` slider; each figure is drawn when first
  asked for and kept;
* while the static site is built (:func:`dgm.book.building_site`) it draws every frame up front
  and returns HTML in which an ``<input type="range">`` swaps the precomputed images, so the
  slider moves on the website without a kernel, a CDN or a network.

``static=True`` or ``False`` overrides the choice (the tests use both).
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Callable, Sequence

import matplotlib.pyplot as plt

from .book import building_site

__all__ = ["slider", "StaticSlider"]


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(draw: Callable, value):
    fig = draw(value)
    if not hasattr(fig, "savefig"):
        raise TypeError(f"draw(value) must return a matplotlib Figure, got {type(fig).__name__} for value {value!r}")
    return fig


# Inline handler: show the frame whose index is the range's value, hide the others, update the label.
_ONINPUT = (
    "var r=this.closest('.dgm-slider'),f=r.querySelectorAll('img.dgm-slider-frame'),i=+this.value;"
    "f.forEach(function(im,j){im.style.display=(j===i)?'':'none';});"
    "r.querySelector('.dgm-slider-value').textContent=f[i].getAttribute('data-label');"
)


class StaticSlider:
    """Precomputed frames with an HTML range input; displays as HTML (no kernel needed)."""

    def __init__(self, frames: Sequence[str], labels: Sequence[str], label: str, start: int = 0):
        self.frames, self.labels, self.label, self.start = list(frames), list(labels), label, start

    def _repr_html_(self) -> str:
        n, start = len(self.frames), self.start
        fit = "max-width:100%;height:auto"  # a frame wider than the text column shrinks to fit it
        imgs = "".join(
            f'<img class="dgm-slider-frame" data-label="{html.escape(lab)}" alt="{html.escape(self.label)} = '
            f'{html.escape(lab)}" src="data:image/png;base64,{png}" style="{fit}{"" if k == start else ";display:none"}">'
            for k, (png, lab) in enumerate(zip(self.frames, self.labels))
        )
        return (
            f'<div class="dgm-slider" data-values="{html.escape(json.dumps(self.labels))}">'
            f'<div class="dgm-slider-controls"><label>{html.escape(self.label)} = '
            f'<span class="dgm-slider-value">{html.escape(self.labels[start])}</span> '
            f'<input type="range" min="0" max="{n - 1}" step="1" value="{start}" '
            f'aria-label="{html.escape(self.label)}" oninput="{html.escape(_ONINPUT)}"></label></div>'
            f"{imgs}</div>"
        )


def slider(draw: Callable, values: Sequence, label: str = "value", start: int = 0, static: bool | None = None):
    """A slider over ``values`` showing the matplotlib figure ``draw(value)``.

    ``label`` names the slider's quantity (e.g. ``"K"``); ``start`` is the index shown first.
    Returns a live ``ipywidgets`` widget, or a :class:`StaticSlider` in the static site
    (``static=None`` decides by :func:`dgm.book.building_site`).
    """
    values = list(values)
    if not values:
        raise ValueError("slider needs at least one value")
    if not 0 <= start < len(values):
        raise ValueError(f"start must index values (0..{len(values) - 1}), got {start}")
    labels = [_format(v) for v in values]
    if static is None:
        static = building_site()
    if static:
        return StaticSlider([_png(_figure(draw, v)) for v in values], labels, label, start)

    import ipywidgets as widgets
    from IPython.display import display

    cache: dict[int, bytes] = {}
    out = widgets.Output()
    control = widgets.SelectionSlider(options=list(zip(labels, range(len(values)))), value=start,
                                      description=label, continuous_update=True)

    def show(change=None):
        i = control.value
        if i not in cache:
            buf = io.BytesIO()
            fig = _figure(draw, values[i])
            fig.savefig(buf, format="png")
            plt.close(fig)
            cache[i] = buf.getvalue()
        with out:
            out.clear_output(wait=True)
            display(widgets.Image(value=cache[i], format="png"))

    control.observe(show, names="value")
    show()
    box = widgets.VBox([control, out])
    box.dgm_frames = cache  # what has been drawn so far (used by the tests)
    return box
