"""The loss terms: each one's gradient reaches the decoder only; bad settings are refused."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from featinv import Inverter
from featinv.losses import LossSettings, feature_loss
from featinv.losses.discriminator import Discriminator
from featinv.metrics import feature_error
from featinv.reliability import NonFiniteLossError, OptionError
from featinv.representations import build_representation
from featinv.training import InversionModule

TINY_DECODER = {"width": 16, "max_width": 32, "min_width": 8}
#: a comparator with parameters (random weights: the gradient test needs weights to guard)
CNN_COMPARATOR = {
    "representation": "cnn",
    "options": {"architecture": "alexnet", "layer": "conv2", "weights": "random"},
}


class GradientProbe(L.Callback):
    """Before each optimizer step: which parameters have a gradient, and a copy of them all."""

    def __init__(self) -> None:
        self.steps: list[tuple[set[str], dict[str, torch.Tensor]]] = []

    def on_before_optimizer_step(self, trainer: L.Trainer, module: Any, optimizer: Any) -> None:
        with_gradient = {
            name
            for name, p in module.named_parameters()
            if p.grad is not None and p.grad.abs().sum() > 0
        }
        snapshot = {name: p.detach().clone() for name, p in module.named_parameters()}
        self.steps.append((with_gradient, snapshot))


def _batches(count: int, size: int = 32, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(4, 3, size, size, generator=generator)} for _ in range(count)]


def _trainer(tmp_path, callbacks: list[L.Callback], **options: Any) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
        **options,
    )


def _module(representation: str = "hog", nonfinite: str = "stop", **loss: Any) -> InversionModule:
    torch.manual_seed(0)
    return InversionModule(
        representation=representation,
        image_size=32,
        decoder_options=TINY_DECODER,
        loss=loss,
        nonfinite_loss=nonfinite,
    )


@pytest.mark.parametrize(
    ("representation", "loss"),
    [
        ("hog", {"image": 1.0}),
        ("hog", {"image": 0.0, "feature": 1.0}),  # Phi as its own comparator
        ("hog", {"image": 0.0, "feature": 1.0, "comparator": CNN_COMPARATOR}),
        (
            "cnn",  # a Phi with weights, compared in HOG
            {"image": 0.0, "feature": 1.0, "comparator": {"representation": "hog"}},
        ),
        ("hog", {"image": 0.0, "adversarial": 1.0}),
    ],
    ids=["image", "feature-phi", "feature-cnn", "feature-of-cnn-phi", "adversarial"],
)
def test_each_term_trains_the_decoder_and_only_the_decoder(tmp_path, representation, loss):
    torch.manual_seed(0)
    options = {"architecture": "alexnet", "layer": "conv2", "weights": "random"}
    module = InversionModule(
        representation=representation,
        representation_options=options if representation == "cnn" else None,
        image_size=64 if representation == "cnn" else 32,
        decoder_options=TINY_DECODER,
        loss=loss,
    )
    probe = GradientProbe()
    size = module.hparams.image_size
    _trainer(tmp_path, [probe], max_steps=2 if loss.get("adversarial") else 1).fit(
        module, DataLoader(_batches(1, size), batch_size=None)
    )
    decoder = {name for name, _ in module.named_parameters() if name.startswith("decoder.")}
    frozen = {
        name
        for name, _ in module.named_parameters()
        if name.startswith(("representation.", "comparator."))
    }
    if representation == "cnn" or ("comparator" in loss and loss["comparator"] is CNN_COMPARATOR):
        assert frozen, "the test needs a frozen network with weights to watch"
    decoder_step = probe.steps[-1][0]  # adversarial: the discriminator step comes first
    assert decoder_step == decoder  # every decoder weight is reached, nothing else
    assert not frozen & decoder_step


def test_a_discriminator_step_changes_only_the_discriminator(tmp_path):
    module = _module(adversarial=0.1, discriminator={"pause_ratio": 0.0})
    probe = GradientProbe()
    _trainer(tmp_path, [probe], max_steps=2).fit(module, DataLoader(_batches(1), batch_size=None))
    (d_grads, before), (_, after) = probe.steps
    assert d_grads == {n for n, _ in module.named_parameters() if n.startswith("discriminator.")}
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == d_grads  # every discriminator weight moved, and nothing else


def test_the_discriminator_pauses_when_it_wins_too_easily(tmp_path):
    # a pause ratio no loss can stay above: the discriminator never steps
    module = _module(adversarial=0.1, discriminator={"pause_ratio": 1e9})
    before = {k: v.clone() for k, v in module.discriminator.state_dict().items()}
    _trainer(tmp_path, [], max_steps=4).fit(module, DataLoader(_batches(2), batch_size=None))
    assert module.discriminator_pauses == 2
    after = module.discriminator.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _losses_per_batch() -> tuple[L.Callback, list[dict[str, float]]]:
    seen: list[dict[str, float]] = []

    class Recorder(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            metrics = trainer.callback_metrics
            seen.append({k: float(v) for k, v in metrics.items() if k.startswith("train/loss")})

    return Recorder(), seen


def test_resume_continues_both_optimizers_exactly(tmp_path):
    batches = DataLoader(_batches(3), batch_size=None)  # one epoch: 3 batches, 6 steps

    def run(ckpt_path=None, checkpoints=None) -> tuple[InversionModule, list[dict[str, float]]]:
        module = InversionModule(
            image_size=32,
            decoder_options=TINY_DECODER,
            loss={"feature": 0.5, "adversarial": 0.1, "discriminator": {"pause_ratio": 0.0}},
            lr_decay_start=0.3,  # the schedule moves within the run: its state must resume
        )
        recorder, seen = _losses_per_batch()
        trainer = _trainer(tmp_path, [recorder, *(checkpoints or [])], max_epochs=2)
        trainer.fit(module, batches, ckpt_path=ckpt_path)
        return module, seen

    torch.manual_seed(0)
    every_epoch = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1, every_n_epochs=1
    )
    whole, whole_losses = run(checkpoints=[every_epoch])
    torch.manual_seed(1)  # other initial weights: everything must come from the checkpoint
    resumed, resumed_losses = run(ckpt_path=tmp_path / "ckpt" / "epoch=0.ckpt")
    assert len(whole_losses) == 6 and len(resumed_losses) == 3
    assert resumed_losses == whole_losses[3:]
    for name, tensor in whole.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_an_adversarial_checkpoint_loads_as_a_plain_inverter(tmp_path):
    module = _module(adversarial=0.1)
    trainer = _trainer(tmp_path, [], max_steps=2)
    trainer.fit(module, DataLoader(_batches(1), batch_size=None))
    trainer.save_checkpoint(tmp_path / "deepsim.ckpt")
    images = _batches(1, seed=1)[0]["image"]
    module.eval()
    with torch.no_grad():
        expected = module(module.features(images))
    assert torch.equal(Inverter.from_checkpoint(tmp_path / "deepsim.ckpt").reconstruct(images),
                       expected)  # fmt: skip


@pytest.mark.parametrize("network", ["discriminator", "decoder"])
def test_a_nonfinite_loss_stops_or_skips_for_either_network(tmp_path, network):
    module = _module(adversarial=0.1)
    poisoned = module.discriminator if network == "discriminator" else module.decoder
    with torch.no_grad():
        next(poisoned.parameters()).fill_(float("nan"))  # NaN losses for both, D's first
    with pytest.raises(NonFiniteLossError, match=f"the {network} loss is nan"):
        if network == "decoder":
            module.losses = LossSettings.from_options({"adversarial": 0.0, "image": 1.0})
            module.automatic_optimization = True
            module.discriminator = None
        _trainer(tmp_path, [], max_steps=2).fit(module, DataLoader(_batches(1), batch_size=None))

    skipping = _module(adversarial=0.1, nonfinite="skip")
    with torch.no_grad():
        next(skipping.discriminator.parameters()).fill_(float("nan"))
    before = {k: v.clone() for k, v in skipping.decoder.state_dict().items()}
    _trainer(tmp_path, [], max_steps=2).fit(skipping, DataLoader(_batches(1), batch_size=None))
    assert skipping.skipped_nonfinite == 2  # the discriminator's and the decoder's
    after = skipping.decoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("comparator", ["lbp", "sift"])
def test_a_comparator_without_gradients_is_refused_by_name(comparator):
    with pytest.raises(OptionError, match=r"model.loss.comparator: .*has no gradients"):
        _module(feature=1.0, comparator={"representation": comparator})


def test_phi_without_gradients_cannot_be_its_own_comparator():
    with pytest.raises(OptionError, match=r"comparator \(null: Phi\): lbp has no gradients"):
        _module(representation="lbp", feature=1.0)


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ({"feture": 1.0}, r"unknown term\(s\) \['feture'\]"),
        ({"feature": -1.0}, "model.loss.feature must be a weight of at least 0"),
        ({"image": 0.0}, "at least one term with a positive weight"),
        ({"adversarial": 1.0, "discriminator": {"lr": 0}}, "discriminator.lr must be positive"),
        ({"adversarial": 1.0, "discriminator": {"depth": 3}}, r"unknown option\(s\) \['depth'\]"),
        ({"feature": 1.0, "comparator": "hog"}, "model.loss.comparator must be null"),
    ],
)
def test_bad_loss_settings_are_refused_by_name(loss, message):
    with pytest.raises(OptionError, match=message):
        LossSettings.from_options(loss)


def test_an_adversarial_weight_alone_gets_the_default_discriminator_said_in_the_log(caplog):
    with caplog.at_level(logging.INFO, logger="featinv.losses"):
        module = _module(adversarial=0.1)
    assert "default discriminator" in caplog.text
    assert isinstance(module.discriminator, Discriminator)
    assert module.losses.discriminator == LossSettings().discriminator


def test_the_feature_loss_is_the_mean_squared_feature_error(photo_batch):
    hog = build_representation("hog")
    blurred = torch.nn.functional.avg_pool2d(photo_batch, 5, 1, 2, count_include_pad=False)
    each = feature_error(hog(blurred), hog(photo_batch))
    assert feature_loss(hog, blurred, photo_batch).item() == pytest.approx(
        (each**2).mean().item(), rel=1e-5
    )
    assert feature_loss(hog, photo_batch, photo_batch).item() == 0.0


def test_a_blank_image_counts_as_a_tenth_of_the_batch_norm():
    hog = build_representation("hog")
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32)
    images[1] = 0.5  # blank: no gradients, no HOG
    assert hog(images[1:]).abs().max() == 0
    noise = images + 0.05 * torch.randn_like(images)
    loss = feature_loss(hog, noise, images)
    assert torch.isfinite(loss)
    squared = (hog(noise) - hog(images)).pow(2).flatten(1).sum(dim=1)
    norms = hog(images).pow(2).flatten(1).sum(dim=1)
    floor = 0.01 * norms.mean()
    expected = (squared[0] / norms[0] + squared[1] / floor) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
