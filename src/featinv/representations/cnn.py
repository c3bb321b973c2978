"""Any layer of any CNN as a representation: built-in networks or a user's own.

``build_representation("cnn", architecture=..., layer=..., weights=...)``:

* ``architecture``: a built-in name (``featinv.representations.architectures``: ``alexnet``,
  ``caffenet``, ``caffealex``, ``vggm``, ``vgg16``) or an import path ``package.module:callable``
  returning an ``nn.Module`` (a user's network, ``torchvision.models:resnet50``, ...);
* ``layer``: a paper layer name of a built-in (``conv5_3``, ``relu5_3``, ``pool5``, ``fc7``)
  or any module name from ``named_modules()`` (``features.29``, ``layer4.2.relu``);
* the forward pass stops at that layer: a built-in network is cut after it (its later
  modules are not even built), any other network is stopped by a hook that raises;
* an output that is not one conv map (tokens, a channel-last map, a tuple, dict or Hugging
  Face ``ModelOutput``) becomes a map or a vector (``network_output``; options ``output``,
  ``layout``, ``prefix_tokens``), and an import path's callable takes
  ``architecture_options``;
* output shape, stride and receptive field come from probing the network at the size asked
  for, so the training size and the decoder follow with no per-layer settings
  (``network_decoder``; D&B Sect. 2.2), and the baseline gets M&V's jitter (IJCV 5.2).

Weights come from local files only (a state dict, or a ``featinv-convert-weights`` output that
also records the input normalization); ``None`` looks for torchvision's file in torch's hub
cache (built-ins), or keeps the factory's own weights (a user's network).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featinv.ops import as_pair
from featinv.representations.architectures import ARCHITECTURES, Architecture
from featinv.representations.base import Representation, check_images, register
from featinv.representations.huggingface import VISION_MODEL
from featinv.representations.input_normalization import (
    TORCHVISION,
    InputNormalization,
    normalization_from,
)
from featinv.representations.network_decoder import fitted_decoder, paper_decoder, training_side
from featinv.representations.network_output import (
    check_layout,
    select_output,
    single_tensor,
    to_features,
)
from featinv.representations.network_tap import (
    LayerNeverRan,
    RefusedSize,
    Stop,
    built_for_size,
    check_takes_pixels,
    grid_geometry,
    hub_checkpoint_dirs,
    import_factory,
    import_path,
    stop_at_output,
    truncate,
)
from featinv.representations.network_weights import (
    load_matching,
    missing_weights_message,
    read_state,
)

log = logging.getLogger(__name__)


#: Input sides tried, after the default, to learn the geometry of a fixed-size network.
PROBE_SIDES = (384, 256, 128, 96, 64, 48, 32)


@register
class CNN(Representation):
    """The output of one layer of a CNN (see the module docstring).

    Args:
        architecture: built-in name, ``package.module:callable``, or the callable itself
            (recorded by its import path).
        layer: paper layer name (built-ins) or module name from ``named_modules()``; ``None``:
            the network's own output (import paths).
        weights: path of a state dict (or of a ``featinv-convert-weights`` output); ``None``:
            torchvision's file from torch's hub cache (built-ins) or the factory's own
            weights (import paths); ``"random"``: random initialization (tests only).
        normalization: ``{"mean", "std", "scale", "bgr"}`` to override the input
            normalization (default: the architecture's, or the weights file's when it
            records one; torchvision's ImageNet mean/std for an import path).
        load_weights: ``False`` reads no file (a checkpoint carries the weights).
        architecture_options: keyword arguments of an import path's callable (a Hugging Face
            config's values, ``timm.create_model``'s name, a local ``from_pretrained`` folder).
        output: the field or index of a layer's output that is not one tensor, dotted for
            nesting (``last_hidden_state``, ``image_embeds``, ``hidden_states.6``, ``0``).
        layout: ``auto``, ``channels_first``, ``channels_last`` or ``tokens`` (``network_output``).
        prefix_tokens: ``drop`` the tokens before the grid (CLS, registers), or ``keep`` each
            as more channels broadcast over the grid.
    """

    name = "cnn"
    differentiable = True
    loads_weights = True
    adam_betas = (0.9, 0.99)  # heavy-tailed features (see Representation.adam_betas)

    def __init__(
        self,
        architecture: str | Callable[..., Any] = "vgg16",
        layer: str | None = "conv5_3",
        weights: str | None = None,
        normalization: dict[str, Any] | None = None,
        load_weights: bool = True,
        architecture_options: dict[str, Any] | None = None,
        output: str | int | None = None,
        layout: str = "auto",
        prefix_tokens: str = "drop",
    ) -> None:
        super().__init__()
        # a YAML or command-line `3` (a Sequential index) arrives as an int
        layer = None if layer is None else str(layer)
        factory = architecture
        if callable(architecture):
            architecture = import_path(architecture)
        self.architecture, self.layer, self.weights = architecture, layer, weights
        self.normalization_override = normalization
        self.architecture_options = dict(architecture_options or {})
        self.output = None if output is None else str(output)
        self.layout, self.prefix_tokens = layout, prefix_tokens
        check_layout(layout, prefix_tokens)
        self.spec: Architecture | None = ARCHITECTURES.get(architecture)
        if self.spec is not None:
            if self.architecture_options:
                raise ValueError(
                    f"architecture_options apply to an import path's callable, not to the "
                    f"built-in {architecture}"
                )
            if layer is None:
                raise ValueError(f"{architecture}: name a layer ({', '.join(self.spec.layers)})")
            with torch.device("meta"):  # shapes only, until cut after the tapped layer
                network = self.spec.build()
        else:
            network = import_factory(factory, self.architecture_options)
            check_takes_pixels(network, architecture)
        self.tap = None if layer is None else self._module_path(network, layer)
        #: the tapped layer's paper name (built-ins), else its module name
        self.tap_name = layer
        norm = self.spec.normalization if self.spec else TORCHVISION
        state = self._read_weights(weights) if load_weights else None
        if state is not None and "normalization" in state:
            norm = normalization_from(state["normalization"])  # recorded by the converter
        if normalization is not None:
            norm = normalization_from({**norm.__dict__, **normalization})
        self.input_norm = InputNormalization(norm, persistent=self.persistent_normalization)
        if self.spec is not None:
            # only the layers up to the tap are ever allocated and initialized
            self.net: nn.Module = truncate(network, self.tap).to_empty(device="cpu")
            for module in self.net.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            self._hook = None
        else:
            self.net = network
            self._hook = (
                None
                if self.tap is None
                else dict(network.named_modules())[self.tap].register_forward_hook(stop_at_output)
            )
        if state is not None:
            self.load_layout(state["state_dict"], source=str(weights))
        self.eval()
        #: shape, stride and receptive field by input size, probed when first asked for
        self._geometries: dict[tuple[int, int], dict[str, Any]] = {}
        # a layer that cannot work is named now; a size the network refuses, when it is used
        with contextlib.suppress(RefusedSize):
            self._geometry()

    @classmethod
    def code_named_by(cls, options: dict[str, Any]) -> str | None:
        architecture = options.get("architecture", "vgg16")
        safe = (*ARCHITECTURES, VISION_MODEL)  # built here, from the installed libraries only
        if isinstance(architecture, str) and architecture not in safe:
            return architecture
        return None

    #: AlexNet keeps its fixed normalization out of its (older) checkpoints.
    persistent_normalization = True

    # ----------------------------------------------------------------------- construction
    def _module_path(self, network: nn.Module, layer: str) -> str:
        if self.spec is not None and layer in self.spec.layers:
            return self.spec.layers[layer]
        names = [name for name, _ in network.named_modules() if name]
        if layer in names and (self.spec is None or layer in self.spec.layers.values()):
            return layer
        valid = list(self.spec.layers) if self.spec else names
        near = difflib.get_close_matches(layer, valid, n=5, cutoff=0.4) or valid[:8]
        raise ValueError(
            f"{self.architecture} has no layer {layer!r}; nearest: {', '.join(near)} "
            f"({len(valid)} layers in all)"
        )

    def _read_weights(self, weights: str | None) -> dict[str, Any] | None:
        """``{"state_dict", ["normalization"]}`` from the weights file, or ``None``."""
        if weights == "random":
            log.warning(
                "%s with RANDOM weights: its features are scientifically meaningless "
                "(fine for tests, not for experiments)",
                self.architecture,
            )
            return None
        if weights is None:
            hub = self.spec.hub_file if self.spec else None
            if self.spec is None:
                return None  # a user's factory brings its own weights
            looked = [d / hub for d in hub_checkpoint_dirs()] if hub else []
            path = next((p for p in looked if p.is_file()), None)
            if path is None:
                raise FileNotFoundError(self._missing_weights_message(looked))
        else:
            path = Path(weights)
            if not path.is_file():
                raise FileNotFoundError(self._missing_weights_message([path]))
        return read_state(path)

    def _missing_weights_message(self, looked: list[Path]) -> str:
        return missing_weights_message(self.architecture, looked, self.spec and self.spec.hub_file)

    def load_layout(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Load the weights the (truncated) network needs from a full-network state dict.

        Raises:
            ValueError: naming the first missing key or the first mismatching shape.
        """
        load_matching(self.net, state, source, self.architecture)

    # ------------------------------------------------------------------------- probing
    def _geometry(self, size: int | tuple[int, int] | None = None) -> dict[str, Any]:
        """Shape, stride and receptive field at ``size`` (the default size: any probed one)."""
        if size is None:
            if self._geometries:
                return next(iter(self._geometries.values()))
            # Stride and receptive field do not depend on the size: a network that does not
            # say its size is probed at common ones until one runs.
            for side in (self.default_image_size, *PROBE_SIDES):
                with contextlib.suppress(RefusedSize):
                    return self._geometry(side)
            size = self.default_image_size
        hw = as_pair(size)
        if hw not in self._geometries:
            self._geometries[hw] = self._probe(hw)
        return self._geometries[hw]

    def _probe(self, hw: tuple[int, int]) -> dict[str, Any]:
        """Run the network once on zeros at ``hw``, recording the shape and the grid geometry.

        Raises:
            ValueError: the network refuses that input size (naming the size it was built for,
                where it says one).
        """
        try:
            with torch.no_grad():
                zeros = torch.zeros(1, 3, *hw, device=self.input_norm.mean.device)
                raw, stride, receptive_field = grid_geometry(self.net, self._raw, zeros)
        except LayerNeverRan:
            raise
        except Exception as error:  # the network's own refusal, whatever it raises
            built = built_for_size(self.net) if self.spec is None else self.spec.input_size
            said = f"; it was built for {built}x{built}" if built else ""
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise RefusedSize(
                f"{self.label} refuses a {hw[0]}x{hw[1]} input ({first[:200]}){said}: set "
                "data.image_size to a size it takes"
            ) from None
        output = self._features(raw, hw, stride)
        return {
            "shape": tuple(output.shape[1:]),
            "stride": stride or 1,
            "receptive_field": receptive_field,
        }

    def _raw(self, x: torch.Tensor) -> Any:
        """The tapped layer's output (or the network's) on raw images, as the network gives it."""
        x = self.input_norm(x)
        if self.spec is not None:
            return self.net(x)
        wants_states = (self.output or "").split(".")[0] in ("hidden_states", "attentions")
        kwargs = {f"output_{self.output.split('.')[0]}": True} if wants_states else {}
        try:
            output = self.net(x, **kwargs)
        except Stop as stop:
            return stop.output
        if self._hook is not None:
            raise LayerNeverRan(f"layer {self.tap!r} of {self.architecture} never ran")
        return output

    def _features(self, raw: Any, hw: tuple[int, int], stride: int | None) -> torch.Tensor:
        where = f"{self.label}" + (f" output {self.output}" if self.output else "")
        value = single_tensor(select_output(raw, self.output, self.label), where)
        return to_features(value, hw, stride, self.layout, self.prefix_tokens, where)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        hw = (int(x.shape[-2]), int(x.shape[-1]))
        stride = self._geometry(hw)["stride"] if self.spec is None else None
        return self._features(self._raw(x), hw, stride)

    @property
    def stride(self) -> int:
        """Input pixels per output cell (for a vector: the stride of the last map)."""
        return self._geometry()["stride"]

    @property
    def receptive_field(self) -> int:
        """Input pixels one output unit sees, along a side (M&V's Tables 1-3, "r.f. size")."""
        return self._geometry()["receptive_field"]

    # -------------------------------------------------------------- Representation API
    @property
    def label(self) -> str:
        return f"{self.network_name}-{self.layer or 'output'}"

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Layer names in the network's order (a built-in's paper names, else module names)."""
        if self.spec is not None:
            return tuple(self.spec.layers)
        return tuple(name for name, _ in self.net.named_modules() if name)

    @property
    def network_name(self) -> str:
        if self.architecture == VISION_MODEL and "model" in self.architecture_options:
            return str(self.architecture_options["model"])
        return self.architecture.rpartition(":")[2]

    @property
    def default_image_size(self) -> int:  # type: ignore[override]
        if self.spec is not None:
            return self.spec.input_size
        return built_for_size(self.net) or 224

    @property
    def min_image_size(self) -> int:  # type: ignore[override]
        # A built-in's vector after a flatten without adaptive pooling needs its input size;
        # any other network is probed at the size asked for, and says if it refuses it.
        if self.spec is None:
            return 16
        adaptive = any(isinstance(m, nn.AdaptiveAvgPool2d) for m in self.net.modules())
        vector = len(self._geometry()["shape"]) == 1
        return self.default_image_size if vector and not adaptive else 16

    @property
    def class_scores(self) -> bool:
        return self.spec is not None and self.layer == "fc8"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Project-convention RGB in [0, 1] -> the network's input convention."""
        return self.input_norm(images)

    def output_shape(self, image_size: int | tuple[int, int]) -> tuple[int, ...]:
        return self._geometry(image_size)["shape"]

    def config(self) -> dict[str, Any]:
        options = {"architecture": self.architecture, "layer": self.layer, "weights": self.weights}
        if self.normalization_override is not None:
            options["normalization"] = self.normalization_override
        extra = {
            "architecture_options": self.architecture_options or None,
            "output": self.output,
            "layout": None if self.layout == "auto" else self.layout,
            "prefix_tokens": None if self.prefix_tokens == "drop" else self.prefix_tokens,
        }
        return {**options, **{k: v for k, v in extra.items() if v is not None}}

    def decoder_defaults(self, image_size: int | tuple[int, int]) -> dict[str, Any]:
        """A decoder whose cost fits the map it reads (``network_decoder.fitted_decoder``)."""
        return fitted_decoder(self.output_shape(image_size), image_size)

    def training_image_size(self) -> int:  # 128 px where 64 px would give a map under 8x8
        return training_side(self.output_shape, self.min_image_size)

    def legacy_decoder_defaults(self, image_size: int | tuple[int, int]) -> dict[str, Any]:
        """Sect. 2.2 as featinv 0.2 built it for every network (``paper_decoder``)."""
        return paper_decoder(self.output_shape(image_size))

    def baseline_defaults(self) -> dict[str, Any]:
        """M&V Sect. 5.2: C per layer (built-ins), jitter a quarter of the stride."""
        options: dict[str, Any] = {"jitter": max(round(self.stride / 4), 1)}
        if self.spec is not None and self.tap_name in self.spec.layers:
            options["c"] = self.spec.c_of(self.tap_name)
        return options

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.min_image_size, self.label)
        return self._run(images)

    def extra_repr(self) -> str:
        return f"architecture={self.architecture}, layer={self.layer}"
