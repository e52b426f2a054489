"""dgm: the shared code of dgm-book, an executable textbook on deep generative models.

Modules (imported lazily where they pull in heavy dependencies):

* :mod:`dgm.data`: 2D toy densities with exact log-densities, the 8x8 digits split,
  dequantization and bits/dim;
* :mod:`dgm.train`: one fit loop (seeding, progress bar, loss history, early stopping, device);
* :mod:`dgm.plot`: the book's figure style and plotting helpers;
* :mod:`dgm.slider`: one call for a slider that is live in Jupyter/Colab and a kernel-free
  strip of precomputed frames in the static site;
* :mod:`dgm.grading`: the course's bonus and final-grade rule;
* :mod:`dgm.book`: where a chapter runs, and glue for numbers quoted in prose.
* :mod:`dgm.metrics`: evaluation without a likelihood (mode coverage, Fréchet distance);
* :mod:`dgm.flows`, :mod:`dgm.vi`, :mod:`dgm.vae`: the model code of chapters 1 to 3, exported
  from the chapters (tools/export.py), where it is derived.
"""

__version__ = "0.1.0"
