"""Files made to harm: decoder files that name code or absurd sizes, and memory bombs.

A decoder file never makes featinv import or call anything it names unless the user names
the code or trusts the file; no image, shard member or checkpoint is read whole before its
size is checked against a budget.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import resource
import subprocess
import sys
import tarfile
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from scipy.io import savemat

from featinv import Inverter, UntrustedCheckpointError
from featinv.cli import main as train
from featinv.cli.convert_weights import main as convert_weights
from featinv.cli.invert import main as invert
from featinv.data.bounded_tar import bounded_webdataset
from featinv.data.images import CorruptImageError, decode_rgb, encode_image
from featinv.exported import export_decoder, read_exported
from featinv.reliability import NotAFeatinvCheckpointError
from tests.helpers import tiny_net, trained_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY = {"width": 8, "max_width": 8, "min_width": 4}
NET = {"architecture": "tests.helpers:tiny_net", "layer": "1"}


def _rewrite_metadata(path: Path, out: Path, **changes) -> Path:
    config, _ = read_exported(path)
    save_file(
        load_file(str(path)), str(out), metadata={"featinv": json.dumps({**config, **changes})}
    )
    return out


@pytest.fixture
def exported_hog(tmp_path) -> Path:
    checkpoint = trained_checkpoint(tmp_path / "hog.ckpt", image_size=32, decoder_options=TINY)
    return export_decoder(checkpoint, tmp_path / "hog")


@pytest.fixture
def marker_module(tmp_path, monkeypatch):
    """A module beside the decoder file, on the import path, that leaves a file if imported."""
    folder = tmp_path / "beside"
    folder.mkdir()
    witness = tmp_path / "imported"
    touch = f"open({str(witness)!r}, 'w').close()"
    (folder / "featinv_marker_module.py").write_text(f"{touch}\ndef build():\n    {touch}\n")
    monkeypatch.syspath_prepend(str(folder))
    return folder, witness


@pytest.fixture
def no_mkdtemp(monkeypatch):
    """A side-effecting stdlib callable, watched: a file naming it must never call it."""
    calls = []
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: calls.append(a) or "/nonexistent")
    return calls


def _cnn_checkpoint(path: Path, architecture: str) -> Path:
    """A featinv checkpoint (plain values and tensors only) whose network is an import path."""
    torch.save(
        {
            "featinv": {"format": 1},
            "state_dict": {},
            "hyper_parameters": {
                "representation": "cnn",
                "representation_options": {"architecture": architecture, "layer": "0"},
                "image_size": 32,
                "decoder_options": {},
            },
        },
        path,
    )
    return path


@pytest.mark.parametrize("named", ["featinv_marker_module:build", "tempfile:mkdtemp", "this:x"])
def test_a_decoder_file_that_names_code_imports_and_calls_nothing(
    tmp_path, exported_hog, marker_module, no_mkdtemp, named, capsys
):
    folder, witness = marker_module
    options = {"architecture": named, "layer": "0"}
    crafted = _rewrite_metadata(
        exported_hog,
        folder / "decoder.safetensors",
        representation="cnn",
        representation_options=options,
    )
    checkpoint = _cnn_checkpoint(folder / "decoder.ckpt", named)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(photo)
    modules_before = set(sys.modules)
    for path in (crafted, checkpoint):
        with pytest.raises(
            UntrustedCheckpointError, match=f"architecture '{named}'.*Nothing was imported"
        ):
            Inverter.load(path)
        with pytest.raises(SystemExit, match="featinv-invert: error: refused"):
            invert(["--model", str(path), str(photo), "--out", str(tmp_path / "out")])
    assert not witness.exists()
    assert no_mkdtemp == []
    assert "featinv_marker_module" not in sys.modules
    assert "this" not in set(sys.modules) - modules_before


def test_a_network_weights_file_that_names_code_runs_nothing(tmp_path, marker_module):
    """A ``weights:`` file whose pickle calls a function (as a whole pickled network does)."""
    folder, witness = marker_module
    crafted = folder / "vgg16.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, crafted)
    with zipfile.ZipFile(crafted) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(crafted, "w") as archive:
        for name, data in members.items():
            if name.endswith("data.pkl"):  # calls featinv_marker_module.build() when loaded
                data = b"\x80\x02cfeatinv_marker_module\nbuild\nq\x00)R."
            archive.writestr(name, data)
    options = f"{{architecture: vgg16, layer: conv1_1, weights: {crafted}}}"
    with pytest.raises(SystemExit) as stop:
        train(["--model.representation=cnn", f"--model.representation_options={options}"])
    message = str(stop.value.code)
    assert message.startswith("featinv-train: error: ") and "\n" not in message
    assert "loading it would run `featinv_marker_module.build`" in message
    assert not witness.exists()
    assert "featinv_marker_module" not in sys.modules


def _keras2_weights(path: Path, make_kernel) -> Path:
    """A Keras 2 weights file of one convolution whose kernel ``make_kernel(group, name)``
    writes (or links)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"block1_conv1"]
        group = f.create_group("block1_conv1")
        group.attrs["weight_names"] = [b"kernel:0", b"bias:0"]
        make_kernel(group, "kernel:0")
        group.create_dataset("bias:0", data=np.zeros(64, np.float32))
    return path


def test_keras_files_that_reach_outside_themselves_are_refused(tmp_path):
    """HDF5 can keep a dataset's values in other files (external storage, virtual datasets,
    external links: a secret, or a FIFO that never answers), or need a filter plugin (a shared
    library HDF5 loads): none of it is followed, loaded or read."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(3 * 3 * 3 * 64, dtype=np.float32).tobytes())
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("kernel", data=np.ones((3, 3, 3, 64), np.float32))
    shape = (3, 3, 3, 64)

    def external_storage(group, name):
        group.create_dataset(
            name, shape, np.float32, external=[(str(secret), 0, secret.stat().st_size)]
        )

    def virtual(group, name):
        layout = h5py.VirtualLayout(shape, np.float32)
        layout[:] = h5py.VirtualSource(str(other), "kernel", shape)
        group.create_virtual_dataset(name, layout)

    def external_link(group, name):
        group[name] = h5py.ExternalLink(str(other), "kernel")

    def plugin(group, name):  # 32004: LZ4, a plugin filter
        group.create_dataset(
            name, shape, np.float32, chunks=shape, compression=32004, allow_unknown_filter=True
        )

    def huge(group, name):  # declares 4 TiB, stores nothing
        group.create_dataset(name, (2**40,), np.float32, chunks=(2**20,))

    cases = {
        external_storage: "keeps its values in other files",
        virtual: "keeps its values in other files",
        external_link: "is a ExternalLink: refused",
        plugin: "needs HDF5 filter plugin 32004: refused",
        huge: r"would take 4096\.0 GiB to read",
    }
    for make_kernel, message in cases.items():
        path = _keras2_weights(tmp_path / f"{make_kernel.__name__}.h5", make_kernel)
        with pytest.raises(SystemExit) as stop:
            convert_weights([str(path), str(tmp_path / f"{make_kernel.__name__}.pth")])
        text = str(stop.value.code)
        assert text.startswith("featinv-convert-weights: error: ") and "\n" not in text
        assert re.search(message, text), (make_kernel.__name__, text)
        assert not (tmp_path / f"{make_kernel.__name__}.pth").exists()


def test_a_zip_bomb_keras_archive_is_refused_before_it_is_unpacked(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", bytes(64 * 2**20))
    assert bomb.stat().st_size < 2**20
    monkeypatch.setattr("featinv.reliability.available_memory", lambda: 32 * 2**20)
    with pytest.raises(SystemExit, match=r"model\.weights\.h5 would take 0\.1 GiB to read"):
        convert_weights([str(bomb), str(tmp_path / "bomb.pth")])


def test_a_compressed_mat_bomb_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    """MATLAB v7 compresses each variable: 64 MiB of zeros is a file of 64 KiB."""
    bomb = tmp_path / "imagenet-vgg-m.mat"
    savemat(bomb, {"layers": np.zeros(8 * 2**20)}, do_compression=True)
    assert bomb.stat().st_size < 2**20
    monkeypatch.setattr("featinv.representations.matconvnet.available_memory", lambda: 32 * 2**20)
    allocated = []
    monkeypatch.setattr("scipy.io.loadmat", lambda *a, **k: allocated.append(a))
    with pytest.raises(SystemExit, match=r"would take more than 0\.0 GiB to read"):
        convert_weights([str(bomb), str(tmp_path / "bomb.pth")])
    assert allocated == []  # never handed to SciPy


def test_a_network_by_import_path_loads_when_the_user_names_it_or_trusts_the_file(tmp_path):
    checkpoint = trained_checkpoint(
        tmp_path / "net.ckpt",
        representation="cnn",
        representation_options=NET,
        image_size=32,
        decoder_options=TINY,
    )
    with pytest.raises(UntrustedCheckpointError, match=r"tests\.helpers:tiny_net"):
        Inverter.load(checkpoint)
    images = torch.rand(2, 3, 32, 32)
    by_path = Inverter.load(checkpoint, architecture="tests.helpers:tiny_net").reconstruct(images)
    by_factory = Inverter.load(checkpoint, architecture=tiny_net).reconstruct(images)
    trusted = Inverter.load(checkpoint, trust_checkpoint=True).reconstruct(images)
    assert torch.equal(by_path, by_factory) and torch.equal(by_path, trusted)
    exported = export_decoder(
        checkpoint,
        tmp_path / "net",
        architecture="tests.helpers:tiny_net",
        include_representation=True,
    )
    with pytest.raises(UntrustedCheckpointError):
        Inverter.load(exported)
    assert torch.equal(Inverter.load(exported, architecture=tiny_net).reconstruct(images), by_path)


def _limited_memory() -> None:
    limit = 3 * 2**30  # 3 GiB of address space: a 55 TB decoder cannot even start
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_absurd_decoder_sizes_are_refused_before_anything_is_allocated(tmp_path, exported_hog):
    crafted = _rewrite_metadata(
        exported_hog,
        tmp_path / "wide.safetensors",
        decoder_options={"width": 2**20, "max_width": 2**20, "min_width": 2**20},
    )
    program = (
        "import sys; from featinv import Inverter\n"
        "try:\n    Inverter.load(sys.argv[1])\n"
        "except Exception as error:\n    print(type(error).__name__, error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(crafted)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limited_memory,
        cwd=ROOT,
    )
    assert done.stdout.startswith("NotAFeatinvCheckpointError"), done.stdout + done.stderr[-2000:]
    assert "do not fit" in done.stdout
    huge = _rewrite_metadata(exported_hog, tmp_path / "huge.safetensors", image_size=10**6)
    with pytest.raises(NotAFeatinvCheckpointError, match="image_size must be an integer from 1"):
        Inverter.load(huge)


def test_jpeg_and_png_pixels_are_checked_from_the_header_before_decoding(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    jpeg, png = encode_image(array, "jpg"), encode_image(array, "png")
    assert decode_rgb(jpeg).shape == decode_rgb(png).shape == (120, 160, 3)
    monkeypatch.setenv("FEATINV_MAX_IMAGE_PIXELS", str(120 * 160 - 1))
    import simplejpeg

    def never(*args, **kwargs):
        raise AssertionError("decoded despite the budget")

    monkeypatch.setattr(simplejpeg, "decode_jpeg", never)
    monkeypatch.setattr(Image.Image, "load", never)
    for data in (jpeg, png):
        with pytest.raises(CorruptImageError, match="160x120 pixels, over the budget of 19199"):
            decode_rgb(data)


def test_a_huge_sparse_file_is_refused_without_being_read(tmp_path):
    sparse = tmp_path / "huge.jpg"
    with open(sparse, "wb") as stream:
        stream.truncate(3 * 2**30)  # 3 GiB on paper, nothing on disk
    tracemalloc.start()
    with pytest.raises(CorruptImageError, match="over the budget of 268435456 bytes"):
        decode_rgb(sparse)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2**20


@pytest.mark.parametrize("compressed", [False, True])
def test_an_oversized_shard_member_or_gzip_bomb_is_skipped_unread(
    tmp_path, monkeypatch, compressed
):
    monkeypatch.setenv("FEATINV_MAX_IMAGE_BYTES", str(2**20))
    good = encode_image(np.full((32, 32, 3), 90, np.uint8))
    shard = tmp_path / ("bomb.tar.gz" if compressed else "bomb.tar")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in (("a.jpg", good), ("bomb.jpg", bytes(128 * 2**20)), ("c.jpg", good)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    shard.write_bytes(gzip.compress(raw.getvalue()) if compressed else raw.getvalue())
    errors = []
    dataset = bounded_webdataset(
        [str(shard)],
        shardshuffle=False,
        nodesplitter=None,
        empty_check=False,
        handler=lambda error: errors.append(error) or True,
    )
    tracemalloc.start()
    keys = [sample["__key__"] for sample in dataset]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert keys == ["a", "c"]
    assert "bomb.jpg of 134217728 bytes is over the budget" in str(errors[0])
    # the 128 MiB member never sat in memory (gzip inflates one 10 KiB block at a time)
    assert peak < 40 * 2**20


def test_a_zip_bomb_checkpoint_is_refused_before_it_is_unpacked(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.ckpt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", bytes(64 * 2**20))
    assert bomb.stat().st_size < 2**20
    monkeypatch.setattr("featinv.reliability.available_memory", lambda: 32 * 2**20)
    with pytest.raises(NotAFeatinvCheckpointError, match=r"would take 0\.1 GiB to read"):
        Inverter.load(bomb)
