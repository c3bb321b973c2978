"""featinv: what does an image representation still know about the image?

Learned up-convolutional inversion (Dosovitskiy & Brox, CVPR 2016) of HOG and other
representations, trained with Lightning on webdataset shards; ``Inverter.from_checkpoint``
loads a trained decoder for fast feed-forward inversion. Importing featinv registers every
representation (``featinv.representations.available_representations()``).
"""

from featinv import representations
from featinv.checkpoint import (
    NotAFeatinvCheckpointError,
    UntrustedCheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from featinv.inverter import Inverter

__version__ = "0.1.0"

__all__ = [
    "Inverter",
    "NotAFeatinvCheckpointError",
    "UntrustedCheckpointError",
    "__version__",
    "load_checkpoint",
    "representations",
    "save_checkpoint",
]
