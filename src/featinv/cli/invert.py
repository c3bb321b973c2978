"""``featinv-invert --model PATH IMAGES_OR_DIRS... --out DIR``: invert images or features.

Per image: ``NAME.png`` (the reconstruction) and ``NAME_side_by_side.png`` (original |
reconstruction), NAME the image's path below the folder given without its extension (with
it, ``photo_jpg``, where two inputs would share a name), and ``summary.json`` with per-image
MSE, PSNR and feature error (the normalized error needs a set of images; ``evaluate.py``
computes it). Nothing is written into an input folder, over an input, or over an existing
file without ``--overwrite``. With ``--features FILE`` (``.pt``, ``.npy``, ``.npz`` or
``.safetensors``) it decodes features that did not come from images (the paper's "recordings
from a real brain" case), after checking their shape. Unreadable images are skipped and
listed; every file is written atomically; the model file is read without executing anything.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from tqdm.auto import tqdm

from featinv.cli.common import (
    CommandError,
    add_file_trust_arguments,
    console_script,
    default_device,
    int_at_least,
    reported,
    torch_device,
)
from featinv.data.images import CorruptImageError, decode_rgb, list_images
from featinv.data.transforms import EvalTransform
from featinv.figures import comparison_grid
from featinv.inverter import Inverter
from featinv.metrics import feature_error, psnr
from featinv.ops import match_size
from featinv.reliability import atomic_write, check_file_fits, write_json
from featinv.runtime import keep_freed_memory

PROG = "featinv-invert"


def _write_png(path: Path, image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    with atomic_write(path) as stream:
        stream.write(buffer.getvalue())


def _to_pil(image: torch.Tensor) -> Image.Image:
    pixels = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(pixels)


def image_files(paths: list[str]) -> list[tuple[Path, Path]]:
    """``(file, name)`` for the files given and the images below the folders given, in the
    order given; ``name`` is the file's path below its folder (its own name for a file)."""
    files: list[tuple[Path, Path]] = []
    for item in map(Path, paths):
        if item.is_dir():
            files += [(path, path.relative_to(item)) for path in list_images(item)]
        elif item.exists():
            files.append((item, Path(item.name)))
        else:
            raise CommandError(f"{item} does not exist")
    if not files:
        raise CommandError(f"no images found in {', '.join(paths)}")
    return files


def output_stems(files: list[tuple[Path, Path]]) -> list[str]:
    """A distinct output name (without ``.png``) for every input: its path below its folder
    without the extension (``a/x`` for ``a/x.jpg``); where two would be the same, with the
    extension (``photo_jpg``, ``photo_png``), then with a number. No name is another's
    ``NAME_side_by_side`` either."""
    stems = [name.with_suffix("").as_posix() for _, name in files]
    tries = [
        lambda i: stems[i],
        lambda i: f"{stems[i]}_{files[i][1].suffix.lstrip('.').lower() or 'file'}",
        lambda i: f"{stems[i]}_{files[i][1].suffix.lstrip('.').lower() or 'file'}_{i + 1}",
    ]
    chosen = [tries[0](i) for i in range(len(files))]
    for attempt in tries[1:]:
        taken = _outputs_taken(chosen)
        clashing = [i for i, stem in enumerate(chosen) if taken[stem.lower()] > 1]
        if not clashing:
            break
        for i in clashing:
            chosen[i] = attempt(i)
    return chosen


def _outputs_taken(stems: list[str]) -> dict[str, int]:
    """How many planned files each stem's two outputs share with others (case-insensitive:
    some file systems are)."""
    files: dict[str, int] = {}
    for stem in stems:
        for name in (stem, f"{stem}_side_by_side"):
            files[name.lower()] = files.get(name.lower(), 0) + 1
    return {
        stem.lower(): max(files[stem.lower()], files[f"{stem}_side_by_side".lower()])
        for stem in stems
    }


def check_output_folder(out: Path, inputs: list[str], planned: list[Path], overwrite: bool) -> None:
    """Refuse an output folder that is a file, or an input folder (or inside one), a planned
    file that is an input, and, without ``overwrite``, files that exist already."""
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} is a file: give a folder for the reconstructions")
    target = out.resolve()
    for item in map(Path, inputs):
        if item.is_dir() and (target == item.resolve() or item.resolve() in target.parents):
            raise CommandError(
                f"--out {out} is inside the input folder {item}: reconstructions would mix "
                "with the photos; give another folder"
            )
    given = {Path(i).resolve() for i in inputs if Path(i).is_file()}
    for path in planned:
        if path.resolve() in given:
            raise CommandError(f"writing {path} would replace an input file; give another --out")
    existing = [path for path in planned if path.exists()]
    if existing and not overwrite:
        raise CommandError(
            f"{len(existing)} output file(s) exist already, e.g. {existing[0]}: pass "
            "--overwrite to replace them, or give another --out"
        )


def _the_features(found: Any, path: Path) -> Any:
    """The one array of a file that holds several by name (``.npz``, ``.safetensors``, a
    saved dict): the one called ``features``, or the only one."""
    if not isinstance(found, Mapping):
        return found
    if "features" in found:
        return found["features"]
    if len(found) == 1:
        return next(iter(found.values()))
    names = ", ".join(map(str, list(found)[:6]))
    raise CommandError(f"{path} holds {len(found)} arrays ({names}); name one 'features'")


def load_features(path: str | Path) -> torch.Tensor:
    """Features from ``.pt`` (a tensor, read without unpickling code), ``.npy``, ``.npz`` or
    ``.safetensors``; a file of several arrays gives the one called ``features``."""
    path = Path(path)
    try:
        check_file_fits(path)
        if path.suffix in (".npy", ".npz"):
            if path.suffix == ".npy":
                array = np.load(path, allow_pickle=False)
            else:
                with np.load(path, allow_pickle=False) as archive:
                    array = _the_features({k: archive[k] for k in archive.files}, path)
            if not np.issubdtype(array.dtype, np.floating):
                raise CommandError(f"{path}: features must be floating point, got {array.dtype}")
            loaded = torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=False))
        elif path.suffix == ".safetensors":
            loaded = _the_features(load_file(path), path)
        else:
            loaded = _the_features(torch.load(path, map_location="cpu", weights_only=True), path)
    except CommandError:
        raise
    except Exception as error:
        raise CommandError(f"{path} is not a readable features file ({error})") from None
    if not isinstance(loaded, torch.Tensor):
        raise CommandError(f"{path} must hold one tensor of features, got {type(loaded).__name__}")
    if not loaded.is_floating_point():
        raise CommandError(f"{path}: features must be floating point, got {loaded.dtype}")
    bad = int((~torch.isfinite(loaded)).sum())
    if bad:
        raise CommandError(f"{path}: {bad} of the features are NaN or infinite")
    return loaded


def invert_images(
    inverter: Inverter, files: list[tuple[Path, str]], out: Path, batch_size: int
) -> dict[str, Any]:
    """Reconstruct every readable image ``(path, output stem)``; write ``STEM.png`` and
    ``STEM_side_by_side.png``; return the summary."""
    transform = EvalTransform(inverter.image_size)
    decoded, skipped = [], []
    for path, stem in files:
        try:
            decoded.append((path, stem, transform(decode_rgb(path))))
        except CorruptImageError as error:
            skipped.append({"file": str(path), "reason": str(error)})
    if not decoded:
        raise CommandError(f"none of the {len(files)} image(s) could be read")
    results = []
    bar = tqdm(total=len(decoded), desc="inverting", unit="image")
    for first in range(0, len(decoded), batch_size):
        chunk = decoded[first : first + batch_size]
        images = torch.stack([image for _, _, image in chunk]).to(inverter.device)
        with torch.inference_mode():
            features = inverter.features(images)
            recon = match_size(inverter.decode(features).float(), tuple(images.shape[-2:]))
            errors = feature_error(inverter.features(recon.clamp(0, 1)), features)
        shown = recon.clamp(0, 1)
        mse = ((shown - images) ** 2).flatten(1).mean(dim=1)
        peak = [psnr(image[None], r[None]) for image, r in zip(images, shown, strict=True)]
        for (path, stem, image), r, m, p, f in zip(chunk, recon, mse, peak, errors, strict=True):
            (out / stem).parent.mkdir(parents=True, exist_ok=True)
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
    parser.add_argument(
        "--features",
        help="decode features from a .pt, .npy, .npz or .safetensors file instead (one array, "
        "or the one named 'features')",
    )
    parser.add_argument("--out", required=True, help="output folder (not an input folder)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace output files that exist already"
    )
    parser.add_argument("--device", type=torch_device, default=default_device())
    parser.add_argument("--batch-size", type=int_at_least(1), default=32)
    parser.add_argument("--representation-weights", help="weights of a network the file lacks")
    add_file_trust_arguments(parser)
    args = parser.parse_args(argv)
    keep_freed_memory()
    if bool(args.inputs) == bool(args.features):
        parser.error("give images or folders, or --features FILE (one of the two)")
    out = Path(args.out)
    with reported(PROG, ValueError):
        if args.features:
            features = load_features(args.features)
            count = len(features) if features.dim() > 1 else 1
            planned = [out / f"features_{i:05d}.png" for i in range(count)]
        else:
            files = image_files(args.inputs)
            stems = output_stems(files)
            planned = [out / f"{s}{end}.png" for s in stems for end in ("", "_side_by_side")]
        check_output_folder(out, args.inputs, [*planned, out / "summary.json"], args.overwrite)
        inverter = Inverter.load(
            args.model,
            args.device,
            args.trust_checkpoint,
            args.representation_weights,
            args.architecture,
        )
        out.mkdir(parents=True, exist_ok=True)
        if args.features:
            summary = invert_features(inverter, features, out, args.batch_size)
            count = len(summary["features"]["reconstructions"])
        else:
            named = [(path, stem) for (path, _), stem in zip(files, stems, strict=True)]
            summary = invert_images(inverter, named, out, args.batch_size)
            count = len(summary["images"])
        summary["model"] = str(args.model)
        write_json(out / "summary.json", summary)
    for item in summary.get("skipped", []):
        print(f"skipped {item['file']}: {item['reason']}")
    print(f"wrote {count} reconstruction(s) and summary.json to {out}")
    return summary


#: the ``[project.scripts]`` entry point
console_main = console_script(main)
