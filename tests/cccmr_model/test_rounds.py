"""`cccmr rounds`: one line per round of a run's history, its warnings, and `--follow` until the release."""

from __future__ import annotations

import json
import threading
import time

import pytest

from cccmr_model.cli import main
from cccmr_model.rounds import head_aucs, round_line, round_warnings
from cccmr_model.run_folder import append_round

RECORD = {
    "round": 9, "phase": "fim", "phase_round": 1, "sites_replied": ["anzhen"], "train_global": {"loss": 5.81},
    "evaluated_round": 8, "evaluate_global": {"auc": 0.822, "auc:cine_4ch": 0.929, "auc:cine_sax": 0.934},
    "sites_failed": {"lanzhou": "no reply before the round timeout"}, "constant_heads": {"anzhen": ["lge_sax"]},
    "memorising_heads": {"cine_sax": {"train_auc": 0.99, "val_auc": 0.5, "evaluated_round": 8}},
    "bytes_sent": 12_000_000, "bytes_received": 5_900_000, "round_time_s": 13.52,
}  # fmt: skip


def test_a_round_line_and_its_warnings() -> None:
    assert round_line(RECORD) == (
        "round 9 (fim 1): sites anzhen, train loss 5.810, val AUC 0.822 (round 8's model), "
        "heads 4CH / SAX / LGE 0.929 / 0.934 / n/a, 17.9 MB, 13.5 s"
    )
    assert round_warnings(RECORD) == [
        "site lanzhou left out: no reply before the round timeout",
        "site anzhen: head lge_sax predicted a constant in its last local epoch",
        "head cine_sax of round 8's model fits its training subjects (training AUC 0.990) but not the validation "
        "split (AUC 0.500)",
    ]
    first = {"round": 1, "phase": "pretrain", "phase_round": 1, "evaluate_global": {}}
    assert "val AUC n/a, heads 4CH / SAX / LGE n/a, 0.0 MB" in round_line(first) and round_warnings(first) == []
    assert head_aucs({"auc": 0.7}) == "n/a" and head_aucs({"auc:cine_sax": 0.75}) == "n/a / 0.750 / n/a"


def test_rounds_prints_every_round(tmp_path, capsys) -> None:
    append_round(tmp_path / "history.jsonl", {**RECORD, "round": 1, "evaluated_round": None, "evaluate_global": {}})
    append_round(tmp_path / "history.jsonl", RECORD)
    assert main(["rounds", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("round 1 (fim 1)") and out[4].startswith("round 9 (fim 1)") and len(out) == 8
    assert out[1] == "  ! site lanzhou left out: no reply before the round timeout"
    assert main(["rounds", str(tmp_path / "history.jsonl")]) == 0  # the file itself


def test_a_missing_or_broken_history_is_named(tmp_path, capsys) -> None:
    assert main(["rounds", str(tmp_path)]) == 2
    assert f"{tmp_path / 'history.jsonl'}: no round history here" in capsys.readouterr().err
    (tmp_path / "history.jsonl").write_text('{"round": 1\n')
    assert main(["rounds", str(tmp_path)]) == 2
    assert "not a round history" in capsys.readouterr().err
    (tmp_path / "history.jsonl").write_text(json.dumps({"phase": "fim"}) + "\n")
    assert main(["rounds", str(tmp_path)]) == 2
    assert "a history line is not a round record" in capsys.readouterr().err


def test_follow_prints_new_rounds_until_the_release_is_written(tmp_path, capsys) -> None:
    history = tmp_path / "history.jsonl"

    def the_server() -> None:  # rounds arrive while `rounds --follow` watches, then the release
        for n in (1, 2):
            time.sleep(0.2)
            append_round(history, {**RECORD, "round": n})
        (tmp_path / "release").mkdir()
        (tmp_path / "release" / "release.json").write_text("{}")

    server = threading.Thread(target=the_server)
    server.start()
    code = main(["rounds", str(tmp_path), "--follow", "--interval", "0.05"])
    server.join(timeout=10)
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert [line.split(" (")[0] for line in out if line.startswith("round ")] == ["round 1", "round 2"]
    assert out[-1] == f"release written: {tmp_path / 'release'}"


def test_interval_must_be_positive(tmp_path, capsys) -> None:
    assert main(["rounds", str(tmp_path), "--interval", "0"]) == 2
    assert "--interval 0.0: must be positive" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["-q", "-v"])
def test_the_lines_go_to_stdout_whatever_the_log_level(tmp_path, capsys, flag) -> None:
    append_round(tmp_path / "history.jsonl", RECORD)
    assert main(["rounds", flag, str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("round 9 (fim 1)")
