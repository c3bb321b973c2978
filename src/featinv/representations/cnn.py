"""Any layer of any CNN as a representation: built-in networks or a user's own.

``build_representation("cnn", architecture=..., layer=..., weights=...)``:

* ``architecture``: a built-in name (``featinv.representations.architectures``: ``alexnet``,
  ``caffenet``, ``caffealex``, ``vggm``, ``vgg16``) or an import path ``package.module:callable``
  returning an ``nn.Module`` (a user's network, ``torchvision.models:resnet50``, ...);
* ``layer``: a paper layer name of a built-in (``conv5_3``, ``relu5_3``, ``pool5``, ``fc7``)
  or any module name from ``named_modules()`` (``features.29``, ``layer4.2.relu``);
* the forward pass stops at that layer: a built-in network is cut after it (its later
  modules are not even built), any other network is stopped by a hook that raises;
* output shape, stride and receptive field come from probing the network, so the decoder is
  sized with no per-layer settings (Dosovitskiy & Brox, Sect. 2.2: spatial maps get
  convolutions then up-convolutions, vectors Table 1's decoder), and the optimization
  baseline gets M&V's jitter (a quarter of the stride, IJCV Sect. 5.2).

Weights come from local files only (a state dict, or a ``featinv-convert-weights`` output that
also records the input normalization); ``None`` looks for torchvision's file in torch's hub
cache (built-ins), or keeps the factory's own weights (a user's network).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featinv.ops import as_pair
from featinv.representations.architectures import (
    ARCHITECTURES,
    TORCHVISION,
    Architecture,
    InputNormalization,
    normalization_from,
)
from featinv.representations.base import Representation, check_images, register
from featinv.representations.network_tap import (
    Stop,
    hub_checkpoint_dirs,
    import_factory,
    import_path,
    kernel_and_stride,
    stop_at_output,
    truncate,
)

log = logging.getLogger(__name__)

#: Training batches the decoder measures its feature statistics on.
STANDARDIZE_BATCHES = 20


@register
class CNN(Representation):
    """The output of one layer of a CNN (see the module docstring).

    Args:
        architecture: built-in name, ``package.module:callable``, or the callable itself
            (recorded by its import path).
        layer: paper layer name (built-ins) or module name from ``named_modules()``.
        weights: path of a state dict (or of a ``featinv-convert-weights`` output); ``None``:
            torchvision's file from torch's hub cache (built-ins) or the factory's own
            weights (import paths); ``"random"``: random initialization (tests only).
        normalization: ``{"mean", "std", "scale", "bgr"}`` to override the input
            normalization (default: the architecture's, or the weights file's when it
            records one; torchvision's ImageNet mean/std for an import path).
        load_weights: ``False`` reads no file (a checkpoint carries the weights).
    """

    name = "cnn"
    differentiable = True
    loads_weights = True

    def __init__(
        self,
        architecture: str | Callable[..., Any] = "vgg16",
        layer: str = "conv5_3",
        weights: str | None = None,
        normalization: dict[str, Any] | None = None,
        load_weights: bool = True,
    ) -> None:
        super().__init__()
        layer = str(layer)  # a YAML or command-line `3` (a Sequential index) arrives as an int
        factory = architecture
        if callable(architecture):
            architecture = import_path(architecture)
        self.architecture, self.layer, self.weights = architecture, layer, weights
        self.normalization_override = normalization
        self.spec: Architecture | None = ARCHITECTURES.get(architecture)
        if self.spec is not None:
            with torch.device("meta"):  # shapes only, until cut after the tapped layer
                network = self.spec.build()
        else:
            network = import_factory(factory)
        self.tap = self._module_path(network, layer)
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
            self._hook = dict(network.named_modules())[self.tap].register_forward_hook(
                stop_at_output
            )
        if state is not None:
            self.load_layout(state["state_dict"], source=str(weights))
        self.eval()
        self._geometry = self._probe(self.default_image_size)

    @classmethod
    def code_named_by(cls, options: dict[str, Any]) -> str | None:
        architecture = options.get("architecture", "vgg16")
        if isinstance(architecture, str) and architecture not in ARCHITECTURES:
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
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            return state
        return {"state_dict": state}

    def _missing_weights_message(self, looked: list[Path]) -> str:
        where = "\n".join(f"  - {p}" for p in looked) or "  (nowhere: no path was given)"
        hub = self.spec.hub_file if self.spec else None
        how = (
            f"download torchvision's {hub} on a machine with internet and copy it into one "
            "of those folders, or pass its path"
            if hub
            else "convert the network's weights into a state dict (featinv-convert-weights "
            "for MatConvNet .mat models; see README) and pass its path"
        )
        return (
            f"no {self.architecture} weights found; looked in:\n{where}\nTo fix: {how} with "
            "--model.representation_options.weights PATH (or weights: random for tests only)."
        )

    def load_layout(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Load the weights the (truncated) network needs from a full-network state dict.

        Raises:
            ValueError: naming the first missing key or the first mismatching shape.
        """
        expected = self.net.state_dict()
        for key, tensor in expected.items():
            if key not in state:
                raise ValueError(
                    f"{source} is not a {self.architecture} state dict: key {key!r} is "
                    f"missing (it has {', '.join(list(state)[:4])}, ...)"
                )
            if tuple(state[key].shape) != tuple(tensor.shape):
                raise ValueError(
                    f"{source}: {key!r} has shape {tuple(state[key].shape)}, "
                    f"{self.architecture} expects {tuple(tensor.shape)}"
                )
        self.net.load_state_dict({k: state[k] for k in expected})

    # ------------------------------------------------------------------------- probing
    def _probe(self, size: int) -> dict[str, Any]:
        """Run the network once on zeros, recording the shape and the grid geometry."""
        steps: list[tuple[int, int]] = []

        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if inputs and isinstance(inputs[0], torch.Tensor):
                geometry = kernel_and_stride(module, inputs[0].shape)
                if geometry is not None:
                    steps.append(geometry)

        hooks = [
            m.register_forward_hook(record) for m in self.net.modules() if not list(m.children())
        ]
        try:
            with torch.no_grad():
                output = self._run(
                    torch.zeros(1, 3, size, size, device=self.input_norm.mean.device)
                )
        finally:
            for hook in hooks:
                hook.remove()
        receptive_field, jump = 1, 1
        for kernel, stride in steps:
            receptive_field += (kernel - 1) * jump
            jump *= stride
        return {
            "shape": tuple(output.shape[1:]),
            "stride": jump,
            "receptive_field": receptive_field,
        }

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(x)
        if self._hook is None:
            output = self.net(x)
        else:
            try:
                self.net(x)
            except Stop as stop:
                output = stop.output
            else:
                raise ValueError(f"layer {self.tap!r} of {self.architecture} never ran")
        if not isinstance(output, torch.Tensor):
            raise ValueError(
                f"layer {self.tap!r} of {self.architecture} outputs a {type(output).__name__}, "
                "not a tensor: choose a layer whose output is one tensor"
            )
        return output

    @property
    def stride(self) -> int:
        """Input pixels per output cell (for a vector: the stride of the last map)."""
        return self._geometry["stride"]

    @property
    def receptive_field(self) -> int:
        """Input pixels one output unit sees, along a side (M&V's Tables 1-3, "r.f. size")."""
        return self._geometry["receptive_field"]

    # -------------------------------------------------------------- Representation API
    @property
    def label(self) -> str:
        return f"{self.network_name}-{self.layer}"

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(self.spec.layers) if self.spec else ()

    @property
    def network_name(self) -> str:
        return self.architecture.rpartition(":")[2]

    @property
    def default_image_size(self) -> int:  # type: ignore[override]
        return self.spec.input_size if self.spec else 224

    @property
    def min_image_size(self) -> int:  # type: ignore[override]
        # a vector after a flatten without adaptive pooling needs the training input size
        adaptive = any(isinstance(m, nn.AdaptiveAvgPool2d) for m in self.net.modules())
        vector = len(self._geometry["shape"]) == 1
        return self.default_image_size if vector and not adaptive else 16

    @property
    def class_scores(self) -> bool:
        return self.spec is not None and self.layer == "fc8"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Project-convention RGB in [0, 1] -> the network's input convention."""
        return self.input_norm(images)

    def output_shape(self, image_size: int | tuple[int, int]) -> tuple[int, ...]:
        height, width = as_pair(image_size)
        if (height, width) == (self.default_image_size,) * 2:
            return self._geometry["shape"]
        with torch.no_grad():
            probe = torch.zeros(1, 3, height, width, device=self.input_norm.mean.device)
            return tuple(self._run(probe).shape[1:])

    def config(self) -> dict[str, Any]:
        options = {"architecture": self.architecture, "layer": self.layer, "weights": self.weights}
        if self.normalization_override is not None:
            options["normalization"] = self.normalization_override
        return options

    def decoder_defaults(self, image_size: int | tuple[int, int]) -> dict[str, Any]:
        """Sect. 2.2: maps -> three convolutions, then up-convolutions (no contraction);
        vectors -> Table 1's fully connected decoder (its own defaults)."""
        shape = self.output_shape(image_size)
        # A network's features are far from unit scale (trained ones large and heavy-tailed):
        # the decoder standardizes them per channel (featinv.decoders.standardize).
        if len(shape) != 3:
            return {"standardize": STANDARDIZE_BATCHES}
        return {
            "num_convs": 3,
            "min_bottleneck": min(shape[1:]),
            "width": 256,
            "max_width": 256,
            "standardize": STANDARDIZE_BATCHES,
        }

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
