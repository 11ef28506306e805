"""A site manifest that is not UTF-8 text is one line naming the file, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from cccmr_model.cli import main
from cccmr_model.data import read_manifest
from cccmr_model.errors import DataError

LATIN1 = "subject_id,label,cine_4ch,cine_sax,lge_sax\ns1,0,a,b,\n# Ménard\n".encode("latin-1")


def test_non_utf8_manifest_is_named(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_bytes(LATIN1)
    with pytest.raises(DataError, match=r"manifest\.csv: manifest is not UTF-8 text \(byte 0xe9 at offset \d+\)"):
        read_manifest(tmp_path)


def test_non_utf8_manifest_is_one_line_in_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "manifest.csv").write_bytes(LATIN1)
    assert main(["ingest", "-q", "--data", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'manifest.csv'}: manifest is not UTF-8" in err
