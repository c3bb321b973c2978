"""Every YAML config in configs/ is valid for the CLI (parsed, types checked, nothing run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from featinv.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    "path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS))
)
def test_config_parses(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    ours = yaml.safe_load(path.read_text())
    for section, values in ours.items():
        for key, value in values.items():
            assert printed[section][key] == value, f"{section}.{key}"
