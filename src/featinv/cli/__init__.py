"""featinv's commands, one module each (``featinv-NAME`` runs ``featinv.cli.NAME``):

* ``train``: ``python train.py`` / ``featinv-train`` (LightningCLI);
* ``evaluate``: ``python evaluate.py`` / ``featinv-evaluate``;
* ``invert``: ``featinv-invert``; ``export``: ``featinv-export``;
* ``shards``: ``featinv-shards``; ``convert_weights``: ``featinv-convert-weights``;
* ``layers``: ``featinv-layers``, the layer sweep (training and ``evaluate`` per layer);
* ``common``: the user-error class, argument types, exit codes and library-warning filters
  every command shares.
"""

from featinv.cli.train import main

__all__ = ["main"]
