"""Training a decoder with Lightning: the LightningModule and its parts.

* ``module``: ``InversionModule``, thin: plain values in, networks built by name, MSE (plus
  DeePSiM's terms), Adam with the paper's schedule, the validation metrics;
* ``adversarial``: DeePSiM's alternating discriminator and decoder steps;
* ``options``: the module's option checks and learning-rate schedule;
* ``callbacks``: data-fault counts, the reconstruction grid, the run summary, atomic saves;
* ``divergence``: a diverged run goes back to its best weights with half the learning rate;
* ``logger``: wandb, offline by default.
"""

from featinv.training.module import InversionModule

__all__ = ["InversionModule"]
