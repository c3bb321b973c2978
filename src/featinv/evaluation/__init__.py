"""Scoring reconstructions: the methods ``evaluate.py`` compares, reports, analyses.

* ``methods``: a trained decoder, the optimization baseline or hybrid inversion as one thing
  to score, and the scoring of several on the same photos (metrics: ``featinv.metrics``);
* ``reports``: ``report.json``, ``report.md`` and the PNG figures;
* ``experiments``: the paper's analyses on one checkpoint (Sect. 4.3-4.5);
* ``analysis``: the pure functions behind them (binarize, dropout, interpolate, samplers).

The command is ``featinv.cli.evaluate`` (``python evaluate.py`` / ``featinv-evaluate``).
"""
