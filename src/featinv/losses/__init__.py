"""The training objective as parts (Dosovitskiy & Brox, NIPS 2016, "DeePSiM", Sect. 3).

``L = l_img L_img + l_feat L_feat + l_adv L_adv``:

* ``L_img``: the mean squared error between image and reconstruction, the only term of the
  CVPR 2016 decoders (their Eq. 3) and the default here;
* ``L_feat``: the squared distance between the reconstruction's and the image's features in
  a fixed comparator network C, ``||C(x_hat_i) - C(x_i)||^2``. featinv divides each image's
  term by ``||C(x_i)||^2`` and averages over the batch: the squared feature error of
  Mahendran & Vedaldi (IJCV Sect. 5.1), so one weight means the same for HOG (values near
  0.1) as for an AlexNet layer (values in the hundreds), and flat photos count as much as
  busy ones;
* ``L_adv``: ``-log D(x_hat_i, Phi(x_i))`` averaged over the batch, with a discriminator D
  that sees the image and the features being inverted; D itself minimizes
  ``-[log D(x_i, Phi(x_i)) + log(1 - D(x_hat_i, Phi(x_i)))]`` (``featinv.losses.discriminator``).

One term per module, re-exported here (settings, feature, adversarial, discriminator); the
LightningModule (``featinv.training``) combines them.
"""

from featinv.losses.adversarial import discriminator_loss, generator_adversarial_loss
from featinv.losses.discriminator import Discriminator
from featinv.losses.feature import FLAT_IMAGE_FLOOR, feature_loss
from featinv.losses.settings import (
    LOSS_KEYS,
    DiscriminatorSettings,
    LossSettings,
    build_comparator,
    loss_networks,
)

__all__ = [
    "FLAT_IMAGE_FLOOR",
    "LOSS_KEYS",
    "Discriminator",
    "DiscriminatorSettings",
    "LossSettings",
    "build_comparator",
    "discriminator_loss",
    "feature_loss",
    "generator_adversarial_loss",
    "loss_networks",
]
