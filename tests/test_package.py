"""What a user gets from ``import featinv`` in a fresh process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import featinv
from tests.helpers import trained_checkpoint

TINY = {"width": 8, "max_width": 8, "min_width": 8}


def _fresh_python(code: str) -> str:
    """Run ``code`` in a new interpreter (nothing imported yet) and return its output."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_every_representation_builds_after_import_featinv():
    out = _fresh_python(
        """
        import featinv
        from featinv.representations import (
            available_representations, build_representation, representation_class
        )
        names = available_representations()
        for name in names:
            # without a weights file: a representation that reads one is built without it
            phi = build_representation(name, load_weights=False)
            assert phi.name == name and representation_class(name) is type(phi)
        print(" ".join(names))
        """
    )
    assert set(out.split()) >= {"alexnet", "hog", "lbp", "sift"}
    assert featinv.representations.SparseSIFT.name == "sift"


def test_sift_checkpoint_loads_in_a_fresh_process(tmp_path):
    path = trained_checkpoint(
        tmp_path / "sift.ckpt", representation="sift", image_size=32, decoder_options=TINY
    )
    out = _fresh_python(
        f"""
        import torch
        from featinv import Inverter
        inverter = Inverter.from_checkpoint({str(path)!r})
        images = torch.rand(2, 3, 32, 32)
        print(inverter.representation.label, tuple(inverter.reconstruct(images).shape))
        """
    )
    assert out.split("\n")[0] == "sift (2, 3, 32, 32)"
