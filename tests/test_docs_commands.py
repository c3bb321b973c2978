"""Every command in the README and docs/ parses as written.

Commands are read from the ``bash`` blocks (continuation lines joined, comments dropped).
``train.py`` lines are parsed by LightningCLI with ``--print_config`` (every option and
config file is checked, nothing is built); ``evaluate.py`` lines by its parser; each
``featinv-*`` line runs its command's ``main`` up to the first thing it would do with the
files, which is replaced by a stand-in that records the call.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Lines that install or test rather than use featinv.
SKIPPED = ("pip ", "apt-get ", "python -m pytest")


def documented_commands() -> list[tuple[str, str]]:
    """``(page, command)`` for every featinv command in a bash block of the docs."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if not line or line.startswith(("#", *SKIPPED)):
                    continue
                line = re.sub(r"^(srun |torchrun .*? )(python )?train\.py", "python train.py", line)
                found.append((page.name, line))
    return found


COMMANDS = documented_commands()


class Reached(Exception):
    """The command parsed its line and got as far as its work."""


def test_the_docs_have_commands_of_every_kind():
    heads = {shlex.split(c)[0 if c.startswith("featinv") else 1] for _, c in COMMANDS}
    assert {"train.py", "evaluate.py", "featinv-invert", "featinv-export"} <= heads


@pytest.mark.slow
@pytest.mark.parametrize("page, command", COMMANDS, ids=[c[:60] for _, c in COMMANDS])
def test_documented_command_parses(page, command, monkeypatch, tmp_path, capsys):
    words = shlex.split(command.replace("$NODE_RANK", "0").replace("$MASTER_ADDR", "localhost"))
    monkeypatch.chdir(ROOT)
    if words[:2] == ["python", "train.py"]:
        from featinv.cli.train import SUBCOMMANDS, build_cli

        args = words[2:]
        args = args if args and args[0] in SUBCOMMANDS else ["fit", *args]
        with pytest.raises(SystemExit) as stop:
            build_cli([*args, "--print_config"])
        assert stop.value.code == 0, capsys.readouterr().err[-2000:]
        return
    if words[:2] == ["python", "evaluate.py"]:
        from featinv.cli.evaluate import parse_args

        parse_args(words[2:])
        return
    name = words[0].removeprefix("featinv-").replace("-", "_")
    targets = {
        "shards": ["featinv.cli.shards.write_shards"],
        "export": ["featinv.cli.export.export_decoder"],
        "invert": ["featinv.cli.invert.image_files", "featinv.cli.invert.load_features"],
        "convert_weights": ["featinv.cli.convert_weights.convert_detected"],
        "layers": ["featinv.cli.layers.train_layer"],
    }
    assert name in targets, f"{page}: no check for {words[0]}"

    def reached(*args, **kwargs):
        raise Reached

    for target in targets[name]:
        monkeypatch.setattr(target, reached)
    module = __import__(f"featinv.cli.{name}", fromlist=["main"])
    with pytest.raises(Reached):
        module.main(words[1:])
