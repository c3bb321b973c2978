"""Finding the images of a source folder and their labels: ImageNet's train and val layouts.

Three layouts are recognized:

* **class folders** (ImageNet train, or val re-arranged the same way): every top-level entry is
  a folder named after its class; labels follow the sorted folder names, as torchvision's
  ``ImageFolder`` and Caffe's ``synsets.txt`` number them.
* **flat folder + labels file** (ImageNet val as distributed): one line per image naming it and
  its class. Accepted: ``NAME LABEL`` lines (space, tab or comma separated; LABEL a class name
  such as ``n01440764`` or a 0-based class index, as in Caffe's ``val.txt``) and Kaggle's
  ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the first word is the class).
* **flat folder** without labels: samples carry no class.

Keys and their order depend only on the file names, so the same folder always gives the same
samples in the same order, whichever machine or number of worker processes writes them.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from featinv.data.images import IMAGE_EXTENSIONS, list_images

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceImage:
    """One image to write: its file, its webdataset key and its class index (if any)."""

    path: Path
    key: str
    label: int | None


@dataclass
class SourceSet:
    """The images of a source folder in writing order, with the class names they index."""

    images: list[SourceImage]
    classes: list[str]
    layout: str
    renamed: list[tuple[str, str]] = field(default_factory=list)


def sample_key(relative: Path) -> str:
    """A webdataset key from a relative path: no dots (they split extensions) and no slashes.

    A file name that is not valid UTF-8 (its undecodable bytes arrive as surrogates) gets
    them written as ``\\xNN``: tar headers and JSON records need text.
    """
    text = str(relative.with_suffix(""))
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text.replace("/", "__").replace(".", "_")


def printable(path: Path) -> str:
    """A path as text that any file or terminal takes (undecodable bytes as ``\\xNN``)."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def load_classes(classes: str | Path | list[str] | None) -> list[str] | None:
    """Class names from a list or a ``classes.json`` written next to training shards."""
    if classes is None or isinstance(classes, list):
        return classes
    path = Path(classes)
    if not path.is_file():
        raise FileNotFoundError(f"class list {path} does not exist (expected a classes.json)")
    names = json.loads(path.read_text())
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path} is not a JSON list of class names")
    return names


def read_labels_file(path: str | Path) -> dict[str, str]:
    """Map image names (without extension) to the label written for them.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: on a line without both a name and a label, naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file {path} does not exist")
    labels: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f for f in re.split(r"[\s,]+", line) if f]
        if number == 1 and fields[0].lower() in ("imageid", "image", "filename", "name"):
            continue  # a CSV header
        if len(fields) < 2:
            raise ValueError(
                f"{path}:{number}: expected 'IMAGE_NAME LABEL', got {line!r}. The devkit's "
                "ILSVRC2012_validation_ground_truth.txt lists IDs without names, in the "
                "devkit's own class order: use LOC_val_solution.csv or a 'name wnid' file"
            )
        labels[Path(fields[0]).stem] = fields[1]
    if not labels:
        raise ValueError(f"labels file {path} holds no labels")
    return labels


def _label_indices(
    names: list[str], classes: list[str] | None, allow_indices: bool
) -> tuple[list[int], list[str]]:
    """Class indices of labels that are class names or (in a labels file) 0-based indices."""
    if allow_indices and all(name.isdigit() for name in names):
        indices = [int(name) for name in names]
        if classes is not None and max(indices) >= len(classes):
            raise ValueError(
                f"label index {max(indices)} is out of range for {len(classes)} classes"
            )
        return indices, classes or []
    classes = classes if classes is not None else sorted(set(names))
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise ValueError(
            f"{len(unknown)} label(s) are not in the class list, e.g. {unknown[:3]}; "
            "pass the training shards' classes.json with --classes"
        )
    return [index[name] for name in names], classes


def _assign_keys(
    root: Path, files: list[Path], labels: list[int | None]
) -> tuple[list[SourceImage], list[tuple[str, str]]]:
    # photo.jpg and photo.png would share a key, and webdataset would merge or drop one of
    # them: later files get a numbered suffix, decided in sorted order (deterministic).
    used: set[str] = set()
    images, renamed = [], []
    for path, label in zip(files, labels, strict=True):
        key = base = sample_key(path.relative_to(root))
        number = 1
        while key in used:
            key, number = f"{base}_dup{number}", number + 1
        if key != base:
            renamed.append((printable(path), key))
            log.warning("duplicate key %s for %s: stored as %s", base, path, key)
        used.add(key)
        images.append(SourceImage(path, key, label))
    return images, renamed


def find_sources(
    source: str | Path,
    labels_file: str | Path | None = None,
    classes: str | Path | list[str] | None = None,
) -> SourceSet:
    """The images below ``source`` with keys and class indices, sorted by path.

    Args:
        source: a folder in one of the module's three layouts.
        labels_file: the labels of a flat folder (ImageNet val).
        classes: the class names to index labels by (a list, or the ``classes.json`` of the
            training shards), so that validation labels match training labels. Default: the
            sorted class folders, or the sorted class names of the labels file.

    Raises:
        FileNotFoundError: if ``source`` (or a named file) does not exist.
        ValueError: if it holds no images, or labels are missing or unknown.
    """
    root = Path(source)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    files = list_images(root)
    if not files:
        raise ValueError(
            f"no images found in {root} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    class_list = load_classes(classes)
    top_level = {p.relative_to(root).parts[0] for p in files}
    class_folders = all((root / name).is_dir() for name in top_level)
    if class_folders:
        if labels_file is not None:
            raise ValueError(
                f"{root} is in the class-folder layout, which carries its own labels; "
                "a labels file is only for a flat folder"
            )
        names = [p.relative_to(root).parts[0] for p in files]
        indices, class_list = _label_indices(names, class_list, allow_indices=False)
        layout = "class folders"
    elif labels_file is not None:
        table = read_labels_file(labels_file)
        missing = [p.name for p in files if p.stem not in table]
        if missing:
            raise ValueError(
                f"{len(missing)} image(s) in {root} have no line in {labels_file}, "
                f"e.g. {missing[:3]}"
            )
        indices, class_list = _label_indices(
            [table[p.stem] for p in files], class_list, allow_indices=True
        )
        layout = "flat folder + labels file"
    else:
        indices, class_list, layout = [None] * len(files), class_list or [], "flat folder"
    images, renamed = _assign_keys(root, files, list(indices))
    return SourceSet(images, class_list, layout, renamed)
