"""featinv: what does an image representation still know about the image?

Learned up-convolutional inversion (Dosovitskiy & Brox, CVPR 2016) of HOG and other
representations, trained with Lightning on webdataset shards; ``Inverter.from_checkpoint``
loads a trained decoder for fast feed-forward inversion.
"""

from featinv.inverter import Inverter, NotAFeatinvCheckpointError, load_checkpoint

__version__ = "0.1.0"

__all__ = ["Inverter", "NotAFeatinvCheckpointError", "__version__", "load_checkpoint"]
