"""What a network's layer gives, made into features a decoder reads.

A CNN layer gives a map ``(B, C, H, W)``. Transformers and embedding models give more kinds
of output, and this module turns each into a map or a vector:

* outputs that are not one tensor (tuples, dicts, Hugging Face ``ModelOutput``s): ``output``
  names the field or index, dotted for nesting (``last_hidden_state``, ``image_embeds``,
  ``hidden_states.6``, ``0``);
* tokens ``(B, N, D)``: the patch grid is ``N`` minus the leading tokens that are not
  patches (CLS, distillation, register tokens), its shape read from the input size and the
  patch stride; the leading tokens are dropped, or kept as ``D`` more channels each,
  broadcast over the grid; the result is ``(B, D, h, w)``;
* channel-last maps ``(B, H, W, C)`` (Swin, ConvNeXt-style blocks), recognized from the
  grid's size or named by ``layout``;
* vectors ``(B, D)`` (pooled embeddings) stay vectors: Table 1's decoder inverts them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

#: How a 3-D or 4-D output is laid out; ``auto`` tells them apart from the grid's size.
LAYOUTS = ("auto", "channels_first", "channels_last", "tokens")
#: What happens to the tokens before the patch grid.
PREFIX_TOKENS = ("drop", "keep")
#: Leading non-patch tokens looked for when the patch stride is not known (CLS, distillation
#: and up to 16 registers).
MAX_PREFIX_TOKENS = 18


def check_layout(layout: str, prefix_tokens: str) -> None:
    """Refuse a ``layout`` or ``prefix_tokens`` that is not one of the choices."""
    for option, value, choices in (
        ("layout", layout, LAYOUTS),
        ("prefix_tokens", prefix_tokens, PREFIX_TOKENS),
    ):
        if value not in choices:
            raise ValueError(f"{option} must be one of {', '.join(choices)}, got {value!r}")


def fields_of(value: Any) -> list[str]:
    """The names (or indices) an output can be indexed by, for error messages."""
    if isinstance(value, Mapping):
        return [str(k) for k, v in value.items() if v is not None]
    if hasattr(value, "keys") and callable(value.keys):  # a ModelOutput
        return [str(k) for k in list(value.keys())]
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [str(i) for i in range(len(value))]
    return []


def select_output(value: Any, path: str | None, where: str) -> Any:
    """The part of ``value`` that ``path`` names (``None``: ``value`` itself).

    Raises:
        ValueError: a part of ``path`` names nothing, listing the fields there are.
    """
    if path is None or path == "":
        return value
    for part in str(path).split("."):
        fields = fields_of(value)
        if part not in fields:
            shown = ", ".join(fields) if fields else f"none: it is a {type(value).__name__}"
            raise ValueError(f"{where} has no output {part!r} (of {path!r}); its outputs: {shown}")
        if isinstance(value, Mapping) or (hasattr(value, "keys") and not isinstance(value, list)):
            try:
                value = value[part]
                continue
            except (KeyError, TypeError):
                pass
        value = value[int(part)]
    return value


def single_tensor(value: Any, where: str) -> torch.Tensor:
    """``value`` if it is a tensor; otherwise a one-line error naming the fields to choose."""
    if isinstance(value, torch.Tensor):
        return value
    fields = fields_of(value)
    hint = (
        f"name one with the option output (its outputs: {', '.join(fields)})"
        if fields
        else "choose a layer whose output is one tensor"
    )
    raise ValueError(f"{where} outputs a {type(value).__name__}, not a tensor: {hint}")


def patch_grid(
    tokens: int, image_hw: tuple[int, int], stride: int | None, where: str
) -> tuple[int, int, int]:
    """``(prefix, h, w)``: the leading non-patch tokens and the patch grid of ``tokens``.

    With a known patch stride the grid is the input size over it; otherwise (or when there
    are fewer tokens than that grid, merged by later layers) the counts of leading tokens from
    0 to ``MAX_PREFIX_TOKENS`` are tried, for a grid with the input's aspect ratio.

    Raises:
        ValueError: no grid fits, naming the counts tried.
    """
    height, width = image_hw
    tried = []
    if stride:
        h, w = height // stride, width // stride
        tried.append(f"{tokens - h * w}+{h}x{w} patches of stride {stride}")
        if 0 < h * w <= tokens and tokens - h * w <= MAX_PREFIX_TOKENS:
            return tokens - h * w, h, w
    # the stride's grid has fewer patches than there are tokens: the rest are not a grid;
    # it has more: the tokens were merged after the patch embedding (Swin), look for a grid
    search = not stride or tokens < (height // stride) * (width // stride)
    for prefix in range(MAX_PREFIX_TOKENS + 1 if search else 0):
        patches = tokens - prefix
        if patches <= 0:
            break
        h = round(math.sqrt(patches * height / width))
        if h > 0 and patches % h == 0 and abs(patches // h / h - width / height) < 0.5:
            return prefix, h, patches // h
        tried.append(f"{prefix}+{patches}")
    raise ValueError(
        f"{where} gives {tokens} tokens for a {height}x{width} input, which no patch grid "
        f"explains (tried, as leading tokens + patches: {', '.join(tried[:8])}"
        f"{', ...' if len(tried) > 8 else ''}; at most {MAX_PREFIX_TOKENS} leading tokens); name "
        "the layout with the option layout, or choose another layer"
    )


def to_features(
    value: torch.Tensor,
    image_hw: tuple[int, int],
    stride: int | None,
    layout: str,
    prefix_tokens: str,
    where: str,
) -> torch.Tensor:
    """A layer's tensor as a map ``(B, C, h, w)`` or a vector ``(B, D)``."""
    if value.dim() == 2:
        return value
    if value.dim() == 4:
        last = _is_channels_last(value, image_hw, stride)
        if layout == "channels_last" or (layout == "auto" and last):
            return value.permute(0, 3, 1, 2)
        return value
    if value.dim() == 3 and layout in ("auto", "tokens"):
        prefix, h, w = patch_grid(value.shape[1], image_hw, stride, where)
        grid = value[:, prefix:].transpose(1, 2).reshape(value.shape[0], value.shape[2], h, w)
        if prefix_tokens == "keep" and prefix:
            extra = value[:, :prefix].reshape(value.shape[0], -1, 1, 1).expand(-1, -1, h, w)
            grid = torch.cat([extra, grid], dim=1)
        return grid
    raise ValueError(
        f"{where} gives features of shape {tuple(value.shape)} (layout {layout}): featinv "
        "inverts maps (B, C, H, W) or (B, H, W, C), tokens (B, N, D) and vectors (B, D)"
    )


def _is_channels_last(value: torch.Tensor, image_hw: tuple[int, int], stride: int | None) -> bool:
    """``(B, H, W, C)``: its middle sides are the grid of the known stride, or, without one,
    have the input's aspect ratio with the last dimension the largest."""
    _, a, b, c = value.shape
    if stride:
        grid = (image_hw[0] // stride, image_hw[1] // stride)
        if (a, b) == grid and (b, c) != grid:
            return True
        if (b, c) == grid:
            return False
    return abs(a / b - image_hw[0] / image_hw[1]) < 0.25 and c > max(a, b)
