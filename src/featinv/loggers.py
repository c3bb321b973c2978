"""``featinv.loggers.WandbLogger``, the name saved run configs use (``featinv.training.logger``)."""

from featinv.training.logger import WandbLogger

__all__ = ["WandbLogger"]
