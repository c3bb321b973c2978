"""What ``evaluate.py`` writes: ``report.json``, ``report.md`` and PNG figures."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from featinv.evaluation.methods import Method
from featinv.figures import save_comparison_grid, save_layer_plot
from featinv.reliability import write_json

#: Originals shown per figure.
SHOWN_IMAGES = 8


def markdown_table(methods: Sequence[Method]) -> list[str]:
    """One row per method: its errors, sharpness, PSNR, SSIM, speed and device."""
    lines = [
        "| method | kind | representation | layer | size | normalized error | structure error "
        "| feature error | sharpness | PSNR | SSIM | s / image | device |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        r = m.results
        fe = "n/a" if r["feature_error"] is None else f"{r['feature_error']:.3f}"
        kind = r["kind"] + (" (autoencoder)" if r["autoencoder"] else "")
        error = f"{r['normalized_error']:.3f} +- {r['normalized_error_std']:.3f}"
        lines.append(
            f"| {m.name} | {kind} | {r['representation']} | {r['layer'] or ''} | {r['image_size']} "
            f"| {error} | {r['structure_error']:.3f} | {fe} | {r['sharpness']:.3f} "
            f"| {r['psnr']:.2f} | {r['ssim']:.3f} "
            f"| {r['seconds_per_image']:.2e} | {r['device']} |"
        )
    return lines


def constants_table(methods: Sequence[Method], groups: dict[int, dict[str, Any]]) -> list[str]:
    """The constant predictions a decoder has to beat: the photos' own mean image (an oracle:
    it knows the photos, each one included), each photo predicted by the mean image of the
    other photos, and each decoder's training data's mean image (when kept)."""
    lines = ["| constant | size | normalized error | structure error |", "|---|---|---|---|"]
    rows = []
    for size, group in groups.items():
        rows.append(("the photos' own mean image (an oracle)", size, group["mean_image"]))
        rows.append(("the mean image of the other photos", size, group["others_mean_image"]))
    rows += [
        (f"the training data's mean image of {m.name}", m.image_size, m.results["train_mean_image"])
        for m in methods
        if m.results.get("train_mean_image")
    ]
    for name, size, errors in rows:
        lines.append(
            f"| {name} | {size} | {errors['normalized_error']:.3f} "
            f"| {errors['structure_error']:.3f} |"
        )
    return lines


def write_reports(
    methods: Sequence[Method],
    groups: dict[int, dict[str, Any]],
    notes: Sequence[str],
    out: Path,
    num_images: int,
) -> dict[str, Any]:
    """report.json, report.md, grid.png (one per image size) and, for several layers of one
    network, layers.png (error against layer, Dosovitskiy & Brox Fig. 7)."""
    out.mkdir(parents=True, exist_ok=True)
    first = min(groups)
    report = {
        "num_images": num_images,
        "image_size": first,
        "normalizer": groups[first]["normalizer"],
        "normalizers": {str(s): g["normalizer"] for s, g in groups.items()},
        "mean_image": {str(s): g["mean_image"] for s, g in groups.items()},
        "others_mean_image": {str(s): g["others_mean_image"] for s, g in groups.items()},
        "methods": {m.name: m.results for m in methods},
        "notes": list(notes),
    }
    write_json(out / "report.json", report)
    lines = [f"# featinv evaluation: {num_images} images", "", *markdown_table(methods), ""]
    lines += ["Constant predictions, for scale:", "", *constants_table(methods, groups), ""]
    lines.append(
        "Normalizer N (mean distance between image pairs): "
        + ", ".join(f"{g['normalizer']:.2f} at {s} px" for s, g in groups.items())
    )
    lines += [f"- {note}" for note in notes]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    shown = min(SHOWN_IMAGES, num_images)
    for size, group in groups.items():
        members = [m for m in methods if m.image_size == size]
        save_comparison_grid(
            out / ("grid.png" if size == first else f"grid_{size}.png"),
            [group["images"][:shown].cpu()] + [m.reconstructions[:shown] for m in members],
            ["original"] + [m.name for m in members],
        )
    _layer_plots(methods, groups, out)
    return report


def _layer_plots(methods: Sequence[Method], groups: dict[int, dict[str, Any]], out: Path) -> None:
    """layers.png for a network evaluated at more than one of its layers (or outputs): the
    x axis holds the evaluated ones, in the network's own order (its blocks' order), with
    the photos' own mean image and the other photos' at each size the layers were scored at."""
    by_network: dict[str, list[Method]] = {}
    for m in methods:
        if m.representation.layer_names:
            by_network.setdefault(m.representation.network_name, []).append(m)
    for name, members in by_network.items():
        points = [
            (
                _layer_of(m),
                m.results["normalized_error"],
                "autoencoder" if m.autoencoder else m.kind,
            )
            for m in members
        ]
        evaluated = {layer for layer, _, _ in points}
        if len(evaluated) < 2:
            continue
        in_order = [layer for layer in members[0].representation.layer_names if layer in evaluated]
        in_order += sorted(evaluated - set(in_order), key=_natural)
        filename = "layers.png" if len(by_network) == 1 else f"layers_{name}.png"
        sizes = sorted({m.image_size for m in members})
        references = [
            (
                label + (f" ({size} px)" if len(sizes) > 1 else ""),
                groups[size][key]["normalized_error"],
            )
            for size in sizes
            for label, key in (
                ("photos' own mean image", "mean_image"),
                ("mean image of the other photos", "others_mean_image"),
            )
        ]
        save_layer_plot(out / filename, points, in_order, name, references)


def _layer_of(method: Method) -> str:
    """The layer a method inverts: its layer, or the network output it names."""
    phi = method.representation
    return str(method.results["layer"] or getattr(phi, "output", None) or "output")


def _natural(name: str) -> list[Any]:
    """``hidden_states.10`` after ``hidden_states.9``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
