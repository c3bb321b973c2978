"""``featinv-invert --model PATH IMAGES_OR_DIRS... --out DIR``: invert images or features.

Per image: ``NAME.png`` (the reconstruction) and ``NAME_side_by_side.png`` (original |
reconstruction), and ``summary.json`` with per-image MSE, PSNR and feature error (the
normalized error needs a set of images; ``evaluate.py`` computes it). With ``--features
FILE.pt|FILE.npy`` it decodes features that did not come from images (the paper's "recordings
from a real brain" case), after checking their shape. Unreadable images are skipped and
listed; every file is written atomically; the model file is read without executing anything.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from featinv.cli.common import CommandError, console_script, int_at_least, reported
from featinv.data.images import CorruptImageError, decode_rgb, list_images
from featinv.data.transforms import EvalTransform
from featinv.figures import comparison_grid
from featinv.inverter import Inverter
from featinv.metrics import feature_error, psnr
from featinv.ops import match_size
from featinv.reliability import atomic_write

PROG = "featinv-invert"


def _write_png(path: Path, image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    with atomic_write(path) as stream:
        stream.write(buffer.getvalue())


def _to_pil(image: torch.Tensor) -> Image.Image:
    pixels = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(pixels)


def image_files(paths: list[str]) -> list[Path]:
    """Files given, and the images below folders given, in the order given."""
    files: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            files += list_images(item)
        elif item.exists():
            files.append(item)
        else:
            raise CommandError(f"{item} does not exist")
    if not files:
        raise CommandError(f"no images found in {', '.join(paths)}")
    return files


def load_features(path: str | Path) -> torch.Tensor:
    """Features from a ``.pt`` (a tensor, read without unpickling code) or ``.npy`` file."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            if not np.issubdtype(array.dtype, np.floating):
                raise CommandError(f"{path}: features must be floating point, got {array.dtype}")
            return torch.from_numpy(array)
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except CommandError:
        raise
    except Exception as error:
        raise CommandError(f"{path} is not a readable features file ({error})") from None
    if not isinstance(loaded, torch.Tensor):
        raise CommandError(f"{path} must hold one tensor of features, got {type(loaded).__name__}")
    if not loaded.is_floating_point():
        raise CommandError(f"{path}: features must be floating point, got {loaded.dtype}")
    return loaded


def invert_images(
    inverter: Inverter, files: list[Path], out: Path, batch_size: int
) -> dict[str, Any]:
    """Reconstruct every readable image; write PNGs; return the summary."""
    transform = EvalTransform(inverter.image_size)
    decoded, skipped = [], []
    for path in files:
        try:
            decoded.append((path, transform(decode_rgb(path))))
        except CorruptImageError as error:
            skipped.append({"file": str(path), "reason": str(error)})
    if not decoded:
        raise CommandError(f"none of the {len(files)} image(s) could be read")
    results = []
    bar = tqdm(total=len(decoded), desc="inverting", unit="image")
    for first in range(0, len(decoded), batch_size):
        chunk = decoded[first : first + batch_size]
        images = torch.stack([image for _, image in chunk]).to(inverter.device)
        with torch.inference_mode():
            features = inverter.features(images)
            recon = match_size(inverter.decode(features).float(), tuple(images.shape[-2:]))
            errors = feature_error(inverter.features(recon.clamp(0, 1)), features)
        shown = recon.clamp(0, 1)
        mse = ((shown - images) ** 2).flatten(1).mean(dim=1)
        peak = [psnr(image[None], r[None]) for image, r in zip(images, shown, strict=True)]
        for (path, image), r, m, p, f in zip(chunk, recon, mse, peak, errors, strict=True):
            stem = path.stem
            _write_png(out / f"{stem}.png", _to_pil(r))
            grid = comparison_grid(
                [image[None].cpu(), r[None].cpu()], ["original", "reconstruction"]
            )
            _write_png(out / f"{stem}_side_by_side.png", grid)
            results.append(
                {
                    "file": str(path),
                    "reconstruction": f"{stem}.png",
                    "mse": float(m),
                    "psnr": float(p),
                    "feature_error": float(f),
                }
            )
        bar.update(len(chunk))
    bar.close()
    return {"images": results, "skipped": skipped}


def invert_features(
    inverter: Inverter, features: torch.Tensor, out: Path, batch_size: int
) -> dict[str, Any]:
    """Decode a batch of features; write one PNG each; return the summary."""
    expected = inverter.representation.output_shape(inverter.image_size)
    if features.dim() == len(expected):
        features = features[None]
    if tuple(features.shape[1:]) != tuple(expected):
        raise CommandError(
            f"features must have shape (N, {', '.join(map(str, expected))}) for this "
            f"{inverter.representation.label} decoder, got {tuple(features.shape)}"
        )
    written = []
    for first in range(0, len(features), batch_size):
        recon = inverter.decode(features[first : first + batch_size].float())
        for i, r in enumerate(recon, start=first):
            _write_png(out / f"features_{i:05d}.png", _to_pil(r))
            written.append(f"features_{i:05d}.png")
    return {"features": {"count": len(features), "reconstructions": written}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of ``featinv-invert``."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Invert images or features with a trained decoder."
    )
    parser.add_argument("inputs", nargs="*", help="images and folders of images")
    parser.add_argument("--model", required=True, help="a .ckpt or an exported .safetensors")
    parser.add_argument("--features", help="decode features from a .pt or .npy file instead")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int_at_least(1), default=32)
    parser.add_argument("--representation-weights", help="weights of a network the file lacks")
    parser.add_argument(
        "--trust-checkpoint", action="store_true", help="load a checkpoint that needs unpickling"
    )
    args = parser.parse_args(argv)
    if bool(args.inputs) == bool(args.features):
        parser.error("give images or folders, or --features FILE (one of the two)")
    with reported(PROG, ValueError):
        inverter = Inverter.load(
            args.model, args.device, args.trust_checkpoint, args.representation_weights
        )
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if args.features:
            summary = invert_features(inverter, load_features(args.features), out, args.batch_size)
        else:
            summary = invert_images(inverter, image_files(args.inputs), out, args.batch_size)
    summary["model"] = str(args.model)
    with atomic_write(out / "summary.json") as stream:
        stream.write(json.dumps(summary, indent=2).encode())
    for item in summary.get("skipped", []):
        print(f"skipped {item['file']}: {item['reason']}")
    count = len(summary.get("images", [])) or summary.get("features", {}).get("count", 0)
    print(f"wrote {count} reconstruction(s) and summary.json to {out}")
    return summary


#: the ``[project.scripts]`` entry point
console_main = console_script(main)
