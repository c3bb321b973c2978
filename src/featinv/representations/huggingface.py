"""Hugging Face ``transformers`` vision models as networks to invert, offline.

``architecture: featinv.representations.huggingface:vision_model`` with
``architecture_options: {model: ViTModel, config: {...}}`` builds a model from its config's
values (random weights), and ``{model: CLIPVisionModelWithProjection, pretrained: FOLDER}``
loads a local ``from_pretrained`` folder (``local_files_only``: nothing is downloaded; the
model's code is the installed library's, never the folder's). ``transformers`` is an optional
dependency: it is imported here only.

Files that name this factory load without ``trust``: it builds only the library's own model
classes, and reads a folder's weights as tensors.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def vision_model(
    model: str, config: dict[str, Any] | None = None, pretrained: str | None = None
) -> nn.Module:
    """A ``transformers`` model class by name, from ``config`` values or a local folder.

    Raises:
        ValueError: transformers is not installed, names no such model, or both or neither
            of ``config`` and ``pretrained`` are given.
    """
    try:
        import transformers
    except ImportError:
        raise ValueError(
            "Hugging Face transformers is not installed: pip install transformers"
        ) from None
    cls = getattr(transformers, str(model), None)
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ValueError(f"transformers has no model class {model!r} (e.g. ViTModel)")
    if pretrained is not None and config is not None:
        raise ValueError("give config (values) or pretrained (a local folder), not both")
    if pretrained is not None:
        return cls.from_pretrained(pretrained, local_files_only=True)
    return cls(cls.config_class(**(config or {})))


#: This factory's import path, as configs and checkpoints record it.
VISION_MODEL = "featinv.representations.huggingface:vision_model"
