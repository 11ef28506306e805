"""The federation's message format, shared by the ServerApp (server/), the ClientApp (client/) and anything else that
speaks it. No flwr here: numpy and plain types, which Flower's own calls turn into records and back.

- Record keys: a message's RecordDict holds the parameters under `ARRAYS`, the reply's metrics under `METRICS`, the
  server's order under `CONFIG`, and in every reply `SITE`, a ConfigRecord `{SITE_NAME: <site name>}`.
  `NUM_EXAMPLES`, in the metrics, is the FedAvg weight (training) or the evaluated subjects (evaluation).
- Parameters: two arrays, in this order: the manifest and the packed values (see cccmr_model/packing.py for why).
  `ArrayRecord(encode(state))` sends them (Flower names them "0" and "1");
  `decode(record.to_numpy_ndarrays(), source)` reads them back, or raises PackingError naming `source`.
  That is the `fp32` form; `cccmr_model/wire_codec.py` holds the lighter `federation.wire` forms (bf16, int8).
- Orders: the config record of a train message (`TrainOrder`) and of an evaluate message (`EvaluateOrder`), each
  with the resolved experiment config as JSON (`experiment_to_json`, read back by `experiment_from_json`) and the
  wire format of the message's parameters and of the reply (`wire`, absent: fp32). `from_config` raises OrderError
  naming a missing or mistyped field; fields it does not know (e.g. Flower's clipping norm) pass.
- Evaluation without its own exchange: a TrainOrder with `evaluate_round` asks the site to evaluate the received
  model (the global model after that round) before training, as an evaluate message would; the train reply's
  metrics then carry the evaluation's metrics under `EVAL_PREFIX` (`eval:loss`, `eval:confusion`, ...).
  `with_evaluation` adds them, `split_evaluation` takes them apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cccmr_model.config import ExperimentConfig, config_from_dict, config_to_dict
from cccmr_model.config.schema import WIRES
from cccmr_model.errors import CccmrError
from cccmr_model.packing import MANIFEST, PACKED, PackingError, pack, unpack

ARRAYS = "arrays"  # ArrayRecord: the parameters, `encode`d
METRICS = "metrics"  # MetricRecord of a reply
CONFIG = "config"  # ConfigRecord of a message from the server: a TrainOrder or EvaluateOrder
SITE = "site"  # ConfigRecord of every reply: {SITE_NAME: <site name>}
SITE_NAME = "name"
NUM_EXAMPLES = "num-examples"  # metric: the FedAvg weight (training samples seen) or the subjects evaluated
EVAL_PREFIX = "eval:"  # train-reply metrics: the evaluation a TrainOrder's `evaluate_round` asked for

ConfigValue = int | float | str | bool  # what a Flower ConfigRecord holds (of the scalars)


class OrderError(CccmrError):
    """A message's config record that is not an order of this format (a field missing or of the wrong type)."""


def encode(state: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The wire form of named parameters (one dtype): [manifest (uint8), packed values (1-D)]."""
    packed = pack(state)
    return [packed[MANIFEST], packed[PACKED]]


def decode(arrays: Sequence[np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Named parameters (views into the packed values) from their wire form; PackingError names `source` when
    `arrays` are not a manifest and its values."""
    if len(arrays) != 2 or np.asarray(arrays[0]).dtype != np.uint8:
        got = ", ".join(f"{np.asarray(a).dtype}{list(np.shape(a))}" for a in arrays[:3])
        more = ", ..." if len(arrays) > 3 else ""
        raise PackingError(
            f"{source}: expected the arrays {MANIFEST!r} and {PACKED!r}, got {len(arrays)} arrays ({got}{more})"
        )
    return unpack({MANIFEST: arrays[0], PACKED: arrays[1]}, source)


def experiment_to_json(config: ExperimentConfig) -> str:
    """The resolved experiment config as every order carries it."""
    return json.dumps(config_to_dict(config))


def experiment_from_json(text: str) -> ExperimentConfig:
    """The experiment config an order carries; OrderError when it is not a JSON object, ConfigError when it is not a
    valid config."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise OrderError(f"config field 'experiment' is not JSON ({err})") from None
    if not isinstance(data, dict):
        raise OrderError(f"config field 'experiment' must be a JSON object, got {type(data).__name__}")
    return config_from_dict(data, source="experiment config sent by the server")


def order_wire(config: Mapping[str, object], order: str) -> str:
    """The wire format an order names (`wire`; fp32 when absent); OrderError when it names none of WIRES."""
    return _Fields(config, order).wire()


@dataclass(frozen=True)
class TrainOrder:
    """What a train message asks: train `phase` for `local_epochs` over the slice `lr_window` of the phase's
    learning-rate schedule, seeded with `seed`, in round `server_round` of the run. With `evaluate_round`, first
    evaluate the received model (the global model after that round), sharing scores only when `share_scores`.
    Parameters come and go in `wire` format; `run_key` names the run (an int8 site keeps its error feedback per
    run)."""

    phase: str
    local_epochs: int
    lr_window: tuple[float, float]
    server_round: int
    seed: int
    experiment_json: str
    evaluate_round: int | None = None
    share_scores: bool = False
    wire: str = "fp32"
    run_key: str = ""

    def to_config(self) -> dict[str, ConfigValue]:
        return {
            "phase": self.phase,
            "local-epochs": int(self.local_epochs),
            "lr-window-start": float(self.lr_window[0]),
            "lr-window-end": float(self.lr_window[1]),
            "server-round": int(self.server_round),
            "seed": int(self.seed),
            "experiment": self.experiment_json,
            "wire": self.wire,
            "run-key": self.run_key,
            **self._evaluation_config(),
        }

    def _evaluation_config(self) -> dict[str, ConfigValue]:
        if self.evaluate_round is None:
            return {}
        return {"evaluate-round": int(self.evaluate_round), "share-subject-scores": bool(self.share_scores)}

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> TrainOrder:
        read = _Fields(config, "train")
        evaluate_round = read.integer("evaluate-round") if "evaluate-round" in config else None
        return cls(
            phase=read.text("phase"),
            local_epochs=read.integer("local-epochs"),
            lr_window=(read.number("lr-window-start"), read.number("lr-window-end")),
            server_round=read.integer("server-round"),
            seed=read.integer("seed"),
            experiment_json=read.text("experiment"),
            evaluate_round=evaluate_round,
            share_scores=evaluate_round is not None and read.flag("share-subject-scores"),
            wire=read.wire(),
            run_key=read.text("run-key") if "run-key" in config else "",
        )


@dataclass(frozen=True)
class EvaluateOrder:
    """What an evaluate message asks: evaluate the sent model (in `wire` format) after round `server_round` (of
    `phase`); share per-subject scores and labels only when `share_scores`."""

    phase: str
    server_round: int
    share_scores: bool
    experiment_json: str
    wire: str = "fp32"

    def to_config(self) -> dict[str, ConfigValue]:
        return {
            "phase": self.phase,
            "server-round": int(self.server_round),
            "share-subject-scores": bool(self.share_scores),
            "experiment": self.experiment_json,
            "wire": self.wire,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> EvaluateOrder:
        read = _Fields(config, "evaluate")
        return cls(
            phase=read.text("phase"),
            server_round=read.integer("server-round"),
            share_scores=read.flag("share-subject-scores"),
            experiment_json=read.text("experiment"),
            wire=read.wire(),
        )


def with_evaluation(train: Mapping[str, object], evaluation: Mapping[str, object]) -> dict[str, object]:
    """A train reply's metrics carrying `evaluation` under `EVAL_PREFIX`."""
    return {**train, **{EVAL_PREFIX + k: v for k, v in evaluation.items()}}


def split_evaluation(metrics: Mapping[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    """(the training metrics, the evaluation's metrics without `EVAL_PREFIX`) of a train reply."""
    train = {k: v for k, v in metrics.items() if not k.startswith(EVAL_PREFIX)}
    evaluation = {k.removeprefix(EVAL_PREFIX): v for k, v in metrics.items() if k.startswith(EVAL_PREFIX)}
    return train, evaluation


class _Fields:
    """Typed reads of one order's config record; OrderError names the order and the field."""

    def __init__(self, config: Mapping[str, object], order: str) -> None:
        self.config, self.order = config, order

    def text(self, key: str) -> str:
        return self._get(key, (str,), "a string")

    def integer(self, key: str) -> int:
        return self._get(key, (int,), "an integer")

    def number(self, key: str) -> float:
        return float(self._get(key, (int, float), "a number"))

    def flag(self, key: str) -> bool:
        return self._get(key, (bool,), "true or false")

    def wire(self) -> str:
        """`wire`, one of WIRES; fp32 when absent (a sender that predates the field speaks fp32)."""
        if "wire" not in self.config:
            return "fp32"
        value = self.text("wire")
        if value not in WIRES:
            raise OrderError(f"{self.order} message: config field 'wire' must be one of {', '.join(WIRES)}, "
                             f"got {short(value)}")  # fmt: skip
        return value

    def _get(self, key: str, kinds: tuple[type, ...], what: str):
        if key not in self.config:
            raise OrderError(f"{self.order} message: config field {key!r} is missing")
        value = self.config[key]
        if not isinstance(value, kinds) or isinstance(value, bool) != (bool in kinds):
            raise OrderError(f"{self.order} message: config field {key!r} must be {what}, got {short(value)}")
        return value


def short(value: object) -> str:
    """repr of `value`, cut to 40 characters."""
    return repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
