"""One line per federated round from a run's `history.jsonl`: what `cccmr rounds` prints and the demo logs.

A line names the round, its phase, the sites that replied, the training loss, the validation of the model it
evaluated (the round before, whose model its train messages carried; its own after the last round): the pooled
cine-only AUC and each sequence head's AUC, then the bytes and the time. Warnings follow on their own lines: sites
left out and why, heads that predicted a constant, heads that fit their training subjects but not validation.
Aggregates only: a history holds no image or identifier.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cccmr_model.sequences import SEQUENCES


def head_aucs(metrics: Mapping[str, Any], kind: str = "auc") -> str:
    """The sequence heads' validation AUCs (`<kind>:<seq>`) as "4CH / SAX / LGE", n/a where a head was not scored;
    "n/a" when none was (the LGE head is scored only where the evaluated message held its encoder)."""
    values = [metrics.get(f"{kind}:{seq}") for seq in SEQUENCES]
    return "n/a" if all(v is None for v in values) else " / ".join(_number(v) for v in values)


def round_line(record: Mapping[str, Any]) -> str:
    """One history record as a line: round, phase, sites, training loss, validation AUCs, MB, seconds."""
    evaluation, train = record.get("evaluate_global") or {}, record.get("train_global") or {}
    mb = (record.get("bytes_sent", 0) + record.get("bytes_received", 0)) / 1e6
    of = record.get("evaluated_round") or record["round"]  # the round whose model was evaluated
    auc = evaluation.get("auc")
    validation = "n/a" if auc is None else f"{auc:.3f} (round {of}'s model)"
    return (
        f"round {record['round']} ({record['phase']} {record.get('phase_round', '?')}): sites "
        f"{','.join(record.get('sites_replied', [])) or 'none'}, train loss {_number(train.get('loss'))}, "
        f"val AUC {validation}, heads 4CH / SAX / LGE {head_aucs(evaluation)}, {mb:.1f} MB, "
        f"{record.get('round_time_s', 0.0):.1f} s"
    )


def round_warnings(record: Mapping[str, Any]) -> list[str]:
    """What the coordinator should look at in one round: sites left out, constant heads, memorising heads."""
    lines = [f"site {site} left out: {reason}" for site, reason in sorted((record.get("sites_failed") or {}).items())]
    for site, heads in sorted((record.get("constant_heads") or {}).items()):
        lines.append(f"site {site}: head {', '.join(heads)} predicted a constant in its last local epoch")
    for seq, auc in sorted((record.get("memorising_heads") or {}).items()):
        of = f" of round {auc['evaluated_round']}'s model" if "evaluated_round" in auc else ""
        lines.append(f"head {seq}{of} fits its training subjects (training AUC {_number(auc.get('train_auc'))}) "
                     f"but not the validation split (AUC {_number(auc.get('val_auc'))})")  # fmt: skip
    return lines


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "n/a"
