"""featinv: what does an image representation still know about the image?

Learned up-convolutional inversion (Dosovitskiy & Brox, CVPR 2016) of HOG and other
representations, trained with Lightning on webdataset shards; ``Inverter.from_checkpoint``
loads a trained decoder for fast feed-forward inversion. Importing featinv registers every
representation (``featinv.representations.available_representations()``).
"""

from featinv import representations
from featinv.checkpoint import load_checkpoint, save_checkpoint
from featinv.exported import featinv_version
from featinv.inverter import Inverter
from featinv.reliability import NotAFeatinvCheckpointError, UntrustedCheckpointError
from featinv.runtime import keep_freed_memory

#: The installed package's version (its metadata), the one exported files are stamped with.
__version__ = featinv_version()

__all__ = [
    "Inverter",
    "NotAFeatinvCheckpointError",
    "UntrustedCheckpointError",
    "__version__",
    "keep_freed_memory",
    "load_checkpoint",
    "representations",
    "save_checkpoint",
]
