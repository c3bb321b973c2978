"""Commands tried as a careless user would: nothing lost or overwritten, one line for every bad
input (no traceback), and no number that is not one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from scipy.io import savemat

from featinv.cli.convert_weights import main as convert_weights
from featinv.cli.evaluate import main as evaluate
from featinv.cli.export import main as export
from featinv.cli.invert import main as invert
from featinv.cli.shards import main as shards
from featinv.exported import export_decoder, read_exported
from featinv.reliability import atomic_write, write_json
from tests.helpers import trained_checkpoint

TINY = {"width": 8, "max_width": 8, "min_width": 4}


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return trained_checkpoint(
        tmp_path / "run" / "hog" / "best.ckpt", image_size=32, decoder_options=TINY
    )


def _photo(path: Path, value: int = 120, size: tuple[int, int] = (40, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------ featinv-invert
def test_invert_never_writes_into_an_input_folder_or_over_an_input(tmp_path, checkpoint):
    photos = tmp_path / "photos"
    photo = _photo(photos / "photo.png")
    before = photo.read_bytes()
    for out in (photos, photos / "inside"):
        with pytest.raises(SystemExit, match=r"invert: error: --out .* is inside the input"):
            invert(["--model", str(checkpoint), str(photos), "--out", str(out)])
    with pytest.raises(SystemExit, match=r"would replace an input file"):
        invert(["--model", str(checkpoint), str(photo), "--out", str(photos)])
    assert photo.read_bytes() == before and sorted(p.name for p in photos.iterdir()) == [
        "photo.png"
    ]


def test_invert_gives_every_input_its_own_output_and_counts_what_it_wrote(
    tmp_path, checkpoint, capsys
):
    inputs = [
        _photo(tmp_path / "in" / "photo.jpg", 1),
        _photo(tmp_path / "in" / "photo.png", 2),
        _photo(tmp_path / "a" / "x.png", 3),
        _photo(tmp_path / "b" / "x.png", 4),
    ]
    out = tmp_path / "out"
    summary = invert(["--model", str(checkpoint), *map(str, inputs), "--out", str(out)])
    written = sorted(p.name for p in out.glob("*.png") if "side_by_side" not in p.name)
    assert len(written) == 4 and len(set(written)) == 4
    assert "wrote 4 reconstruction(s)" in capsys.readouterr().out
    assert {r["reconstruction"] for r in summary["images"]} == set(written)
    # folders keep the path below them: a/x and b/x never meet
    summary = invert(
        ["--model", str(checkpoint), str(tmp_path / "in"), "--out", str(tmp_path / "o2")]
    )
    assert sorted(r["reconstruction"] for r in summary["images"]) == [
        "photo_jpg.png",
        "photo_png.png",
    ]


def test_invert_replaces_nothing_without_overwrite(tmp_path, checkpoint):
    photo = _photo(tmp_path / "in" / "photo.png")
    out = tmp_path / "out"
    invert(["--model", str(checkpoint), str(photo), "--out", str(out)])
    (out / "summary.json").write_text("mine")
    with pytest.raises(SystemExit, match=r"exist already.*--overwrite"):
        invert(["--model", str(checkpoint), str(photo), "--out", str(out)])
    assert (out / "summary.json").read_text() == "mine"
    invert(["--model", str(checkpoint), str(photo), "--out", str(out), "--overwrite"])
    assert json.loads((out / "summary.json").read_text())["images"][0]["file"] == str(photo)


def test_invert_refuses_an_output_file_and_non_finite_features(tmp_path, checkpoint):
    photo = _photo(tmp_path / "photo.png")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit, match=r"--out .*afile is a file"):
        invert(["--model", str(checkpoint), str(photo), "--out", str(tmp_path / "afile")])
    features = torch.rand(2, 31, 4, 4)
    features[1, 3, 2, 2] = float("nan")
    features[0, 0, 0, 0] = float("inf")
    torch.save(features, tmp_path / "f.pt")
    with pytest.raises(SystemExit, match=r"2 of the features are NaN or infinite"):
        invert(
            [
                "--model",
                str(checkpoint),
                "--features",
                str(tmp_path / "f.pt"),
                "--out",
                str(tmp_path / "o"),
            ]
        )


def test_json_reports_hold_no_nan_or_infinity(tmp_path):
    write_json(tmp_path / "r.json", {"psnr": float("inf"), "e": [float("nan"), 0.5]})

    def refuse(name):
        raise ValueError(name)

    assert json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse) == {
        "psnr": None,
        "e": [None, 0.5],
    }


# ------------------------------------------------------------------------ featinv-export
def test_export_replaces_nothing_without_overwrite_and_writes_into_a_folder(tmp_path, checkpoint):
    out = tmp_path / "hog.safetensors"
    out.write_text("mine")
    with pytest.raises(SystemExit, match=r"featinv-export: error: .*exists; pass --overwrite"):
        export([str(checkpoint), str(out)])
    assert out.read_text() == "mine"
    export([str(checkpoint), str(out), "--overwrite"])
    assert read_exported(out)[0]["representation"] == "hog"
    folder = tmp_path / "shared"
    folder.mkdir()
    written = export([str(checkpoint), str(folder)])
    assert written == folder / "hog-best.safetensors" and written.is_file()


@pytest.mark.parametrize("fault", ["missing", "extra", "shape", "string metadata"])
def test_a_damaged_safetensors_file_gets_one_line(tmp_path, checkpoint, fault):
    exported = export_decoder(checkpoint, tmp_path / "good")
    tensors, (config, _) = load_file(str(exported)), read_exported(exported)
    metadata = {"featinv": json.dumps(config)}
    key = next(k for k in tensors if k.startswith("decoder."))
    if fault == "missing":
        del tensors[key]
    elif fault == "extra":
        tensors["decoder.surprise"] = torch.zeros(3)
    elif fault == "shape":
        tensors[key] = torch.zeros(7, 7)
    else:
        metadata = {"featinv": json.dumps("just a string")}
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=metadata)
    torch.save(torch.rand(1, 31, 4, 4), tmp_path / "features.pt")
    with pytest.raises(SystemExit, match=r"^featinv-invert: error: .*bad\.safetensors"):
        invert(
            [
                "--model",
                str(bad),
                "--features",
                str(tmp_path / "features.pt"),
                "--out",
                str(tmp_path / "o"),
            ]
        )


# ------------------------------------------------------------------------ featinv-shards
@pytest.mark.parametrize("option", [["--size", "0"], ["--quality", "500"], ["--workers", "0"]])
def test_shard_options_out_of_range_are_usage_errors(tmp_path, option, capsys):
    with pytest.raises(SystemExit) as stop:
        shards([str(tmp_path), str(tmp_path / "out"), *option])
    assert stop.value.code == 2
    assert f"argument {option[0]}: must be" in capsys.readouterr().err


def test_extreme_strips_and_undecodable_names_do_not_stop_a_shard_run(tmp_path, capsys):
    source = tmp_path / "src"
    _photo(source / "good.png")
    Image.fromarray(np.zeros((1, 300, 3), np.uint8)).save(source / "strip.png")
    _photo(Path(os.fsdecode(bytes(source) + b"/caf\xe9-latin1.png")))
    for _ in range(2):  # a rerun finds every shard done
        shards([str(source), str(tmp_path / "out"), "--size", "256"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["written"] == 2 and len(summary["skipped"]) == 1
    assert "strip.png" in capsys.readouterr().out
    with tarfile.open(next((tmp_path / "out").glob("*.tar"))) as tar:
        assert any("\\xe9" in name for name in tar.getnames())


# ------------------------------------------------------------------------ evaluate.py
def test_evaluate_sizes_devices_and_identical_images_get_one_line(tmp_path, checkpoint, capsys):
    with pytest.raises(SystemExit, match=r"decodes features of 32-px images only"):
        evaluate(["--checkpoint", str(checkpoint), "--image-size", "100", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as stop:
        evaluate(["--checkpoint", str(checkpoint), "--image-size", "100000"])
    assert stop.value.code == 2 and "must be at most" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            evaluate(["--checkpoint", str(checkpoint), "--device", "cuda"])
        assert "no CUDA GPU is available" in capsys.readouterr().err
    same = tmp_path / "same"
    for name in ("a.png", "b.png", "c.png"):
        _photo(same / name, value=7)
    with pytest.raises(SystemExit, match=r"photos are identical.*distance N is 0"):
        evaluate(
            ["--checkpoint", str(checkpoint), "--images", str(same), "--out", str(tmp_path / "e")]
        )


@pytest.mark.parametrize("kind", ["not a tar", "truncated", "closed port"])
def test_evaluate_on_unreadable_shards_gets_one_line(tmp_path, checkpoint, kind):
    shard = tmp_path / "s.tar"
    if kind == "not a tar":
        shard.write_text("hello")
    elif kind == "truncated":
        with tarfile.open(shard, "w") as tar:
            for i in range(3):
                tar.add(_photo(tmp_path / f"p{i}.png", i), arcname=f"p{i}.png")
        shard.write_bytes(shard.read_bytes()[:1500])
    pattern = "http://127.0.0.1:9/s.tar" if kind == "closed port" else str(shard)
    with pytest.raises(SystemExit, match=r"featinv-evaluate: error: need at least 2 decodable"):
        evaluate(
            ["--checkpoint", str(checkpoint), "--shards", pattern, "--out", str(tmp_path / "e")]
        )


# ------------------------------------------------------------------------ convert-weights
@pytest.mark.parametrize("fault", ["pad", "weights", "averageImage"])
def test_a_malformed_mat_file_gets_one_line(tmp_path, fault):
    layer = {"name": "conv1", "type": "conv", "stride": np.array([2.0, 2.0]), "pad": np.zeros(4)}
    cell = np.empty((1, 2), dtype=object)
    cell[0, 0] = np.zeros((7, 7, 3, 96), np.float32)
    cell[0, 1] = np.zeros(96, np.float32)
    layer["weights"] = cell
    average = np.zeros((224, 224, 3), np.float32)
    if fault == "pad":
        layer["pad"] = "wide"
    elif fault == "weights":
        layer["weights"] = "none"
    else:
        average = "grey"
    layers = np.empty((1, 1), dtype=object)
    layers[0, 0] = layer
    savemat(
        tmp_path / "m.mat", {"layers": layers, "meta": {"normalization": {"averageImage": average}}}
    )
    with pytest.raises(SystemExit) as stop:
        convert_weights(
            [str(tmp_path / "m.mat"), str(tmp_path / "w.pth"), "--architecture", "vggm"]
        )
    message = str(stop.value.code)
    assert message.startswith("featinv-convert-weights: error: ") and "\n" not in message
    assert not (tmp_path / "w.pth").exists()


def test_a_file_that_is_no_model_is_refused_with_one_reason_once(tmp_path):
    (tmp_path / "x.mat").write_text("not matlab")
    with pytest.raises(SystemExit) as stop:
        convert_weights([str(tmp_path / "x.mat"), str(tmp_path / "w.pth")])
    assert str(stop.value.code).count("not a readable .mat file") == 1


# ------------------------------------------------------------------------ files written
def test_written_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "shared.tar") as stream:
            stream.write(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "shared.tar").stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------------ featinv-train
def _train(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``featinv-train ARGS`` in a fresh process (a hang ends in ``timeout``, failing)."""
    return subprocess.run(
        [sys.executable, "-c", "from featinv.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def _bundled_val() -> str:
    from featinv.data.bundled import bundled_shards

    return bundled_shards()["val"]


SMALL_RUN = [
    "--data.image_size=32",
    "--data.num_workers=1",
    "--trainer.limit_val_batches=1",
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    f"--model.decoder_options={TINY}",
]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["empty file", "not a tar", "tar without members", "closed port"])
def test_training_on_shards_that_yield_nothing_ends_by_itself(tmp_path, kind):
    shard = tmp_path / "s.tar"
    if kind == "empty file":
        shard.write_bytes(b"")
    elif kind == "not a tar":
        shard.write_text("hello")
    elif kind == "tar without members":
        tarfile.open(shard, "w").close()
    pattern = "http://127.0.0.1:9/s.tar" if kind == "closed port" else str(shard)
    done = _train(
        [
            "--data.synthetic_fraction=0",
            f"--data.train_shards={pattern}",
            f"--data.val_shards={_bundled_val()}",
            *SMALL_RUN,
        ],
        tmp_path,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("featinv-train: error: no training sample could be read from the last")
    assert pattern in last


@pytest.mark.slow
def test_sigterm_ends_a_run_after_writing_last_ckpt(tmp_path):
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from featinv.cli import main; main()",
            "--trainer.max_steps=100000",
            "--data.batches_per_epoch=100000",
            "--trainer.val_check_interval=3",
            *SMALL_RUN,
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if list((tmp_path / "checkpoints" / "hog").glob("best.ckpt")):
                break  # a validation ran: training is under way
            time.sleep(1)
        time.sleep(3)
        os.killpg(process.pid, signal.SIGTERM)  # as a scheduler does: the whole group
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    assert (
        err.strip().splitlines()[-1].startswith("featinv-train: stopped by SIGTERM after last.ckpt")
    )
    last = torch.load(tmp_path / "checkpoints" / "hog" / "last.ckpt", weights_only=True)
    assert last["global_step"] > 0


def test_unreadable_validation_shards_and_an_impossible_checkpoint_dir_get_one_line(tmp_path):
    from featinv.cli.train import main

    (tmp_path / "bad.tar").write_text("hello")
    with pytest.raises(
        SystemExit, match=r"featinv-train: error: no validation sample could be read"
    ):
        main(
            [
                "--data.train_shards=" + _bundled_val(),
                f"--data.val_shards={tmp_path / 'bad.tar'}",
                "--trainer.max_steps=1",
                "--data.num_workers=0",
                *SMALL_RUN[2:],
                "--data.image_size=32",
                f"--checkpoint_dir={tmp_path / 'c'}",
            ]
        )
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit, match=r"checkpoint_dir: cannot make the folder .*afile"):
        main(["--trainer.max_steps=1", f"--checkpoint_dir={tmp_path / 'afile' / 'sub'}"])


def test_a_full_disk_during_a_checkpoint_save_gets_one_line(tmp_path, monkeypatch):
    from featinv.cli.train import main

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4")

    monkeypatch.setattr("featinv.training.callbacks.torch.save", full_disk)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"could not write the checkpoint .*is the disk full"):
        main(
            [
                "--trainer.max_steps=2",
                "--data.batches_per_epoch=2",
                "--data.num_workers=0",
                *SMALL_RUN[2:],
            ]
        )


def test_resuming_applies_a_new_learning_rate_and_refuses_another_representation(
    tmp_path, monkeypatch, caplog
):
    from featinv.cli.train import build_cli, main

    monkeypatch.chdir(tmp_path)
    common = ["--data.batches_per_epoch=2", "--data.num_workers=0", *SMALL_RUN[2:]]
    main(["--model.representation=lbp", "--trainer.max_epochs=1", *common])
    last = tmp_path / "checkpoints" / "lbp" / "last.ckpt"
    with pytest.raises(SystemExit, match=r"trained with representation='lbp'.*'hog'"):
        main(
            ["--model.representation=hog", f"--ckpt_path={last}", "--trainer.max_epochs=2", *common]
        )
    with caplog.at_level("INFO", logger="featinv"):
        cli = build_cli(
            [
                "fit",
                "--model.representation=lbp",
                "--model.lr=1e-9",
                f"--ckpt_path={last}",
                "--trainer.max_epochs=2",
                *common,
            ]
        )
    assert "model.lr 0.001 -> 1e-09" in caplog.text
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] <= 1e-9
