"""The `cccmr` entry point lists its subcommands and each one answers --help."""

from __future__ import annotations

import pytest

from cccmr_model.cli import COMMANDS, main


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_subcommand_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert "usage: cccmr" in capsys.readouterr().out


def test_config_prints_resolved(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--config", "tiny", "--set", "seed=7"]) == 0
    assert "seed: 7" in capsys.readouterr().out
