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


def test_os_and_decode_errors_are_one_line_naming_the_file(monkeypatch, capsys) -> None:
    from pathlib import Path

    from cccmr_model.cli import config_cmd

    def unreadable(args):
        raise PermissionError(13, "Permission denied", "/site/manifest.csv")

    def latin1(args):
        path = Path("/site/notes.txt")
        return b"caf\xe9".decode("utf-8") and path

    for run, expected in [
        (unreadable, "cccmr config: error: /site/manifest.csv: Permission denied\n"),
        (latin1, "cccmr config: error: /site/notes.txt: not UTF-8 text (byte 0xe9 at offset 3)\n"),
    ]:
        monkeypatch.setattr(config_cmd, "run", run)
        assert main(["config"]) == 2
        assert capsys.readouterr().err == expected


def _blocked(tmp_path):
    """A path whose parent is a file: no folder can be made there, even as root."""
    (tmp_path / "plain.txt").write_text("not a folder")
    return tmp_path / "plain.txt" / "sub"


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["train", "--config", "tiny", "--data", "{tmp}", "--out", "{blocked}"], "--out"),
        (["train", "--config", "tiny", "--data", "{tmp}", "--out", "{tmp}/o", "--cache", "{blocked}"], "--cache"),
        (["ablation", "--config", "tiny", "--data", "{tmp}", "--test", "{tmp}", "--out", "{blocked}"], "--out"),
        (["ingest", "--data", "{tmp}", "--cache", "{blocked}"], "--cache"),
        (["ingest", "--data", "{tmp}", "--discover", "--out", "{blocked}/draft.csv"], "--out"),
        (["evaluate", "--release", "{tmp}/none", "--data", "{tmp}", "--out", "{blocked}"], "--out"),
        (["evaluate", "--release", "{tmp}/none", "--data", "{tmp}", "--cache", "{blocked}"], "--cache"),
        (["predict", "--release", "{tmp}/none", "--manifest", "{tmp}/m.csv", "--out", "{blocked}/p.csv"], "--out"),
        (["export", "--release", "{tmp}/none", "--out", "{blocked}/m.onnx"], "--out"),
    ],
)
def test_unwritable_outputs_are_refused_before_any_work(argv, option, tmp_path, capsys) -> None:
    blocked = _blocked(tmp_path)
    args = [a.format(tmp=tmp_path, blocked=blocked) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {option} {blocked}" in err, err
    assert "cannot write there" in err and "plain.txt is a file, not a folder" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "--release", "r", "--data", "d", "--resamples", "-5"], "--resamples -5: must be at least 10"),
        (["evaluate", "--release", "r", "--data", "d", "--resamples", "0"], "--resamples 0: must be at least 10"),
        (["export", "--release", "r", "--opset", "1"], "--opset 1: must be 11 to 20"),
        (["export", "--release", "r", "--opset", "99"], "--opset 99: must be 11 to 20"),
    ],
)
def test_bad_numeric_options_are_one_line(argv, message, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
