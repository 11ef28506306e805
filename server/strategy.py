"""Phase-aware FedAvg: each round trains one phase's parameter groups and merges their average into the full model.

The strategy keeps the full global model. `configure_train` sends the groups of the round's phase (plus the
frozen groups its forward pass needs) with the phase, local epochs, learning-rate window and seed; sites reply
with exactly the groups they trained. Parameters travel in `federation.wire` format (cccmr_model/wire_codec.py):
with bf16 or int8 a reply is an update, which `_check_train` adds to the fp32 master copy the strategy keeps, so
every check below sees trained weights. `aggregate_train` rejects unusable replies (logged by site name), bounds
each reply's update norm and claimed `num-examples` (server/validation.py), aggregates the rest
(`federation.aggregation`: FedAvg's mean weighted by `num-examples`, or Flower's median or trimmed mean; see
server/aggregation.py) and writes the result into the global model; an evaluation's `num-examples` is bounded
the same way among the round's evaluations. Sites are named by the node
the SuperLink registered; a reply that claims another name, or one another node holds, is refused. A
site whose reply flags a head that predicted a constant in its last local epoch (`constant:<head>`, see
`cccmr_model.engine.train`) is named in a warning and in the round's `constant_heads`; a head of an evaluated model
that fits its training subjects but scores near chance on the validation split, in `memorising_heads`.

Evaluation has no exchange of its own but after the last round. Round t's global model, due an evaluation every
`federation.evaluate_every` rounds, is what round t+1 sends: its train order asks the sites to evaluate it before
training (`evaluate_round`), the message adds the evaluated groups the phase does not send (`eval_keys`: the
cine-only model and the cine heads; see server/app.py), and the replies carry
the evaluation under `eval:`, checked apart from the training part (a bad evaluation leaves out only itself).
`aggregate_train` pools them into round t+1's history line with `evaluated_round` t. After the last round
`configure_evaluate` sends the final evaluation (`evaluated_round` the last round; an evaluation of the round before,
which that round's train replies carried, moves to the line's `previous_evaluation`). `aggregate_evaluate`, the
last hook `Strategy.start` calls in a round, pools it, then closes the round: one history line and one checkpoint.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from cccmr_model import run_folder
from cccmr_model.config import ExperimentConfig
from cccmr_model.errors import CccmrError
from cccmr_model.packing import MANIFEST, PACKED, PackingError, manifest_array, pack, unpack
from cccmr_model.wire import (
    ARRAYS,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    SITE,
    SITE_NAME,
    EvaluateOrder,
    TrainOrder,
    encode,
    experiment_to_json,
    split_evaluation,
)
from cccmr_model.wire_codec import decode_reply, encode_model
from server.aggregation import aggregate, server_step
from server.checkpoint import BackgroundCheckpoints, strategy_meta
from server.evaluation import global_eval_metrics, memorising_heads
from server.schedule import RoundPlan, round_seed, select
from server.validation import (
    EVAL_METRICS,
    SITE_NAME_PATTERN,
    TRAIN_METRICS,
    TRAIN_REPLY_METRICS,
    check_eval_metrics,
    check_train_reply,
    examples_bound,
    short_repr,
    split_metrics,
    update_bound,
    update_norm,
)

log = logging.getLogger("cccmr.server")

CONSTANT = "constant:"  # training metric prefix: the head predicted a constant over the site's last local epoch


class FederationError(CccmrError):
    """A round that cannot go on (too few usable replies); resume from the last checkpoint."""


MIN_EVAL_SUBJECTS = 10  # an evaluation may claim max_examples_ratio x this whatever the others claim


@dataclass
class RoundLog:
    """What one round did, written as one history line."""

    plan: RoundPlan
    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)  # wall clock, for the history
    exchange_s: dict[str, float] = field(default_factory=dict)  # per stage: messages out until replies back
    stage_started: float = field(default_factory=time.monotonic)
    sent_to: dict[int, str] = field(default_factory=dict)
    expecting: dict[int, str] = field(default_factory=dict)  # nodes the current stage (train/evaluate) waits for
    outgoing: list[Message] = field(default_factory=list)  # the current stage's messages (ids set when pushed)
    failed: dict[str, str] = field(default_factory=dict)
    train: dict[str, dict[str, Any]] = field(default_factory=dict)
    train_global: dict[str, float] = field(default_factory=dict)
    constant_heads: dict[str, list[str]] = field(default_factory=dict)  # site -> heads flagged constant
    memorising_heads: dict[str, dict] = field(default_factory=dict)  # head -> training and validation AUC, round
    claims: dict[str, int] = field(default_factory=dict)  # site -> num-examples claimed (rejected replies too)
    update_norms: dict[str, float] = field(default_factory=dict)  # site -> L2 norm of its update
    update_bound: float | None = None
    metrics_dropped: dict[str, list[str]] = field(default_factory=dict)  # site -> metric names not allow-listed
    evaluate_round: int | None = None  # the earlier round whose model this round's train replies evaluate
    evaluate: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluate_global: dict[str, float] = field(default_factory=dict)
    evaluated_round: int | None = None  # the round whose model `evaluate` evaluated
    previous_evaluation: dict[str, Any] = field(default_factory=dict)  # last round: the piggy-backed evaluation
    bytes_sent: int = 0
    bytes_received: int = 0


class PhaseFedAvg(FedAvg):
    """FedAvg over the phase schedule `plan`, continuing after `completed_rounds` rounds (resume)."""

    def __init__(
        self,
        plan: Sequence[RoundPlan],
        global_state: Mapping[str, np.ndarray],
        *,
        config: ExperimentConfig,
        run_dir: Path,
        eval_keys: Sequence[str],
        completed_rounds: int = 0,
        known_sites: Mapping[int, str] | None = None,
        checkpoint_keep: int = 2,
    ) -> None:
        federation = config.federation
        min_sites = federation.min_sites
        super().__init__(min_train_nodes=min_sites, min_evaluate_nodes=min_sites, min_available_nodes=min_sites,
                         weighted_by_key=NUM_EXAMPLES, arrayrecord_key=ARRAYS, configrecord_key=CONFIG)  # fmt: skip
        self.plan = list(plan)
        self.global_state = {k: np.array(v, copy=True) for k, v in global_state.items()}
        self.config = config
        self.federation = federation
        self.run_dir = Path(run_dir)
        self.eval_keys = list(eval_keys)
        self.completed_rounds = completed_rounds
        self.resumed_from = completed_rounds
        self.sites: dict[int, str] = dict(known_sites or {})
        self._resumed_names = set(self.sites)  # names from the checkpoint: the node's first reply may correct them
        self.checkpoint_keep = checkpoint_keep
        self.checkpoints = BackgroundCheckpoints()  # written while the next round trains
        self._train_global: dict[int, dict[str, Any]] = {}  # the last aggregated round's training metrics
        self.expected_sites = len(federation.sites)
        self.min_sites = min_sites
        self.max_update_norm = federation.max_update_norm  # server/privacy.py lowers it to the clipping norm
        self.registered: dict[int, str] = {}  # node id -> the name the SuperLink registered for it
        self._round: RoundLog | None = None
        self._experiment_json = experiment_to_json(config)
        self.wire = federation.wire
        self.run_key = uuid.uuid4().hex  # names this run in train orders (an int8 site's error feedback)
        self.accepted: list[dict[str, np.ndarray]] = []  # the round's averaged replies, for server/privacy.py
        self.round_extras: dict[str, Any] = {}  # extra fields of the round's history line (e.g. central_dp)
        self.final_evaluation: dict[str, dict[str, Any]] = {}  # last evaluated round's site replies, for the release

    @property
    def history_path(self) -> Path:
        return run_folder.history_path(self.run_dir)

    @property
    def checkpoint_dir(self) -> Path:
        return run_folder.checkpoint_dir(self.run_dir)

    def remaining_rounds(self) -> int:
        return len(self.plan) - self.completed_rounds

    def global_arrays(self) -> ArrayRecord:
        return ArrayRecord(encode(self.global_state))

    # ---- training ----

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the round's phase groups and schedule to every connected site."""
        plan = self._plan(server_round)
        self._round = RoundLog(plan, evaluate_round=self._piggyback_round(plan))
        node_ids = self._connected_nodes(grid, first=server_round == 1)
        sent = select(self.global_state, plan.sends)
        if self._round.evaluate_round is not None:  # the evaluated model: the cine-only groups and the heads
            sent.update({k: self.global_state[k] for k in self.eval_keys if k not in sent})
        content = RecordDict(
            {
                ARRAYS: ArrayRecord(encode_model(sent, self.wire)),
                CONFIG: ConfigRecord(
                    TrainOrder(
                        phase=plan.phase,
                        local_epochs=plan.local_epochs,
                        lr_window=plan.lr_window,
                        server_round=plan.server_round,
                        seed=round_seed(self.config.seed, plan),
                        experiment_json=self._experiment_json,
                        evaluate_round=self._round.evaluate_round,
                        share_scores=self.federation.share_subject_scores,
                        wire=self.wire,
                        run_key=self.run_key,
                    ).to_config()
                ),
            }
        )
        log.info(
            "round %d/%d: phase %s %d/%d, lr window %.3f-%.3f, sending %d arrays to %s",
            plan.server_round, len(self.plan), plan.phase, plan.phase_round, plan.phase_rounds,
            *plan.lr_window, len(content[ARRAYS]), self._names(node_ids),
        )  # fmt: skip
        return self._messages(content, node_ids, f"{MessageType.TRAIN}.{plan.phase}")

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average the usable replies into the global model; fail the round below `min_sites`."""
        plan = self._plan(server_round)
        self._round.exchange_s["train"] = round(time.monotonic() - self._round.stage_started, 3)
        expected = select(self.global_state, plan.trains)
        bound = update_bound(expected, self.max_update_norm, self.federation.max_update_ratio)
        self._round.update_bound = bound
        evaluations: dict[str, dict[str, Any]] = {}
        checked = [self._check_train(site, msg, expected, bound, evaluations) for site, msg in self._replies(replies)]
        evaluations = self._bound_evaluations(evaluations, f"evaluation of round {self._round.evaluate_round}")
        if self._round.evaluate_round is not None and evaluations:
            self._record_evaluation(evaluations, self._round.evaluate_round)
        accepted = self._bound_claims([item for item in checked if item is not None])
        if len(accepted) < self.min_sites:
            self.checkpoints.wait()  # the checkpoint the error points to is on disk when it is raised
            raise FederationError(
                f"round {plan.server_round}: {len(accepted)} usable replies, fewer than federation.min_sites "
                f"{self.min_sites}; resume from {self.checkpoint_dir}"
            )
        accepted.sort(key=lambda item: item[0])  # a fixed summation order
        self.accepted = [arrays for _, arrays, _ in accepted]
        weights = [float(m[NUM_EXAMPLES]) for _, _, m in accepted]
        names = list(expected)  # every accepted reply holds exactly these, in any order: pack them alike
        buffers = [pack({k: a[k] for k in names})[PACKED] for a in self.accepted]
        averaged = aggregate(buffers, weights, self.federation.aggregation, self.federation.trim_fraction)
        if self.federation.server_lr != 1.0:
            averaged = server_step(pack(expected)[PACKED], averaged, self.federation.server_lr)
        for key, value in unpack({MANIFEST: manifest_array(expected), PACKED: averaged}, "average").items():
            self.global_state[key] = value.astype(self.global_state[key].dtype, copy=False)
        contents = [RecordDict({METRICS: MetricRecord(m)}) for _, _, m in accepted]
        train_global = _over_reporting_sites(dict(aggregate_metricrecords(contents, NUM_EXAMPLES)), accepted)
        train_global[NUM_EXAMPLES] = sum(int(m[NUM_EXAMPLES]) for _, _, m in accepted)
        self._round.train_global = train_global
        self._train_global = {plan.server_round: train_global}  # what the next round's evaluation is read against
        log.info("round %d: %s of %s (%s)", plan.server_round, self.federation.aggregation, [s for s, _, _ in accepted],
                 _short(train_global))  # fmt: skip
        return self.global_arrays(), MetricRecord(train_global)

    def _check_train(
        self,
        site: str,
        msg: Message,
        expected: Mapping[str, np.ndarray],
        bound: float | None,
        evaluations: dict[str, dict[str, Any]],
    ) -> tuple[str, dict[str, np.ndarray], dict[str, Any]] | None:
        """(site, arrays, allow-listed training metrics) of a usable reply; None (logged, recorded) otherwise. The
        evaluation the reply carries, when the order asked for one, goes to `evaluations` if it passes its checks."""
        asked = self._round.evaluate_round is not None
        metrics, evaluation = split_evaluation(self._allowed(site, _metrics(msg), TRAIN_REPLY_METRICS if asked
                                                             else TRAIN_METRICS))  # fmt: skip
        if asked:
            self._check_evaluation(site, evaluation, evaluations)
        claim = metrics.get(NUM_EXAMPLES)
        if isinstance(claim, int) and not isinstance(claim, bool):
            self._round.claims[site] = claim
        try:
            record = msg.content.array_records.get(ARRAYS, ArrayRecord())
            arrays = decode_reply(record.to_numpy_ndarrays(), self.wire, f"reply of {site}", expected)
        except PackingError as err:
            self._fail(site, f"rejected: {err}")
            return None
        reason = check_train_reply(arrays, metrics, expected)
        if reason is None:
            norm = update_norm(arrays, expected)
            self._round.update_norms[site] = round(norm, 6)
            if bound is None or norm <= bound:
                return site, arrays, metrics
            which = "max_update_norm" if self.max_update_norm is not None else "the round's max_update_ratio bound"
            reason = f"update norm {norm:.4g} exceeds {which} {bound:.4g}"
        self._fail(site, f"rejected: {reason}")
        return None

    def _bound_claims(
        self, checked: list[tuple[str, dict[str, np.ndarray], dict[str, Any]]]
    ) -> list[tuple[str, dict[str, np.ndarray], dict[str, Any]]]:
        """The replies whose `num-examples` (the FedAvg weight) is within the round's bound; the rest fail."""
        federation = self.federation
        limit = examples_bound([m[NUM_EXAMPLES] for _, _, m in checked], federation.max_num_examples,
                               federation.max_examples_ratio)  # fmt: skip
        accepted = []
        for site, arrays, metrics in checked:
            if metrics[NUM_EXAMPLES] > limit:
                what = "federation.max_num_examples" if federation.max_num_examples is not None else "the round's bound"
                self._fail(site, f"rejected: num-examples {metrics[NUM_EXAMPLES]} exceeds {what} {limit:.6g}")
                continue
            self._round.train[site] = metrics
            self._note_constant_heads(site, metrics)
            accepted.append((site, arrays, metrics))
        return accepted

    def _allowed(self, site: str, metrics: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
        """The allow-listed metrics of a reply; the others are dropped, named in a warning and the history."""
        kept, dropped = split_metrics(metrics, allowed)
        if dropped:
            names = [short_repr(name) for name in dropped]
            self._round.metrics_dropped[site] = names
            log.warning("round %d: site %s: dropped metrics not on the allow-list: %s",
                        self._round.plan.server_round, site, ", ".join(names[:5]))  # fmt: skip
        return kept

    # ---- evaluation, end of round ----

    def _bound_evaluations(self, site_metrics: dict[str, dict[str, Any]], what: str) -> dict[str, dict[str, Any]]:
        """The evaluations whose `num-examples` (their weight in the pooled metrics) is within
        `federation.max_examples_ratio` x the lower median of the round's evaluation claims, that median taken as at
        least `MIN_EVAL_SUBJECTS` (honest validation splits of a few subjects differ by more than the ratio); the rest
        fail."""
        claims = [max(int(m[NUM_EXAMPLES]), MIN_EVAL_SUBJECTS) for m in site_metrics.values()]
        limit = examples_bound(claims, None, self.federation.max_examples_ratio)
        kept = {}
        for site, metrics in site_metrics.items():
            if metrics[NUM_EXAMPLES] > limit:
                self._fail(site, f"{what} rejected: num-examples {metrics[NUM_EXAMPLES]} exceeds the round's bound "
                                 f"{limit:.6g}")  # fmt: skip
                continue
            kept[site] = metrics
        return kept

    def _piggyback_round(self, plan: RoundPlan) -> int | None:
        """The round before `plan`'s when it was due an evaluation (every `evaluate_every` rounds): `plan`'s train
        message carries its global model, so its replies evaluate it. None otherwise."""
        previous = plan.server_round - 1
        return previous if previous >= 1 and previous % self.federation.evaluate_every == 0 else None

    def _check_evaluation(self, site: str, evaluation: dict[str, Any], evaluations: dict[str, dict[str, Any]]) -> None:
        """Keep a train reply's evaluation in `evaluations` when it passes `check_eval_metrics`; otherwise only the
        evaluation is left out (logged, in the history's `sites_failed`)."""
        reason = check_eval_metrics(evaluation, self.config.num_classes)
        if reason is None:
            evaluations[site] = evaluation
        else:
            self._fail(site, f"evaluation of round {self._round.evaluate_round} rejected: {reason}")

    def _record_evaluation(self, site_metrics: dict[str, dict[str, Any]], evaluated_round: int) -> dict[str, float]:
        """Pool the sites' evaluation of round `evaluated_round`'s model into the round's history line (an earlier
        one of this round moves to `previous_evaluation`); the pooled metrics."""
        rnd = self._round
        if rnd.evaluated_round is not None:
            rnd.previous_evaluation = {"evaluated_round": rnd.evaluated_round, "evaluate": rnd.evaluate,
                                       "evaluate_global": rnd.evaluate_global}  # fmt: skip
        self.final_evaluation = site_metrics
        rnd.evaluated_round = evaluated_round
        rnd.evaluate = {s: _without_lists(m) for s, m in site_metrics.items()}
        rnd.evaluate_global = global_eval_metrics(site_metrics, self.config.num_classes)
        log.info("round %d: evaluation of round %d: %s", rnd.plan.server_round, evaluated_round,
                 _short(rnd.evaluate_global))  # fmt: skip
        self._note_memorising_heads(evaluated_round)
        return rnd.evaluate_global

    def _note_memorising_heads(self, evaluated_round: int) -> None:
        """Warn about, and keep for the history, the heads of round `evaluated_round`'s model that fit their training
        subjects but not the validation split (`server.evaluation.memorising_heads`)."""
        rnd = self._round
        heads = memorising_heads(self._train_global.get(evaluated_round, {}), rnd.evaluate_global)
        rnd.memorising_heads.update({seq: {**auc, "evaluated_round": evaluated_round} for seq, auc in heads.items()})
        for seq, auc in heads.items():
            log.warning(
                "round %d: head %s of round %d's model fits its training subjects (training AUC %.2f) but not the "
                "validation split (AUC %.2f): it may be memorising them", rnd.plan.server_round, seq,
                evaluated_round, auc["train_auc"], auc["val_auc"],
            )  # fmt: skip

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """After the last round only, send the cine-only model and heads to every site (the final evaluation); earlier
        rounds' evaluations travel with the next round's train messages."""
        plan = self._plan(server_round)
        if plan.server_round != len(self.plan):
            self._round.expecting = {}
            return []
        self._round.stage_started = time.monotonic()
        node_ids = self._connected_nodes(grid, first=False)
        content = RecordDict(
            {
                ARRAYS: ArrayRecord(encode_model({k: self.global_state[k] for k in self.eval_keys}, self.wire)),
                CONFIG: ConfigRecord(
                    EvaluateOrder(
                        phase=plan.phase,
                        server_round=plan.server_round,
                        share_scores=self.federation.share_subject_scores,
                        experiment_json=self._experiment_json,
                        wire=self.wire,
                    ).to_config()
                ),
            }
        )
        return self._messages(content, node_ids, MessageType.EVALUATE)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Pool the sites' counts into global metrics, then write the round's history line and checkpoint."""
        if self._round.expecting:
            self._round.exchange_s["evaluate"] = round(time.monotonic() - self._round.stage_started, 3)
        site_metrics = {}
        for site, msg in self._replies(replies):
            metrics = self._allowed(site, _metrics(msg), EVAL_METRICS)
            reason = check_eval_metrics(metrics, self.config.num_classes)
            if reason is not None:
                self._fail(site, f"evaluation rejected: {reason}")
                continue
            site_metrics[site] = metrics
        site_metrics = self._bound_evaluations(site_metrics, "evaluation")
        result = None
        if site_metrics:
            result = MetricRecord(self._record_evaluation(site_metrics, self._round.plan.server_round))
        self._end_round()
        return result

    def _end_round(self) -> None:
        rnd = self._round
        plan = rnd.plan
        run_folder.append_round(
            self.history_path,
            {
                "round": plan.server_round,
                "phase": plan.phase,
                "phase_round": plan.phase_round,
                "lr_window": list(plan.lr_window),
                "local_epochs": plan.local_epochs,
                "sites_sent": sorted(set(rnd.sent_to.values())),
                "sites_replied": sorted(rnd.train),
                "sites_failed": rnd.failed,
                "train": rnd.train,
                "train_global": rnd.train_global,
                "sigma": {k: v for k, v in rnd.train_global.items() if "sigma" in k},
                "constant_heads": rnd.constant_heads,
                "memorising_heads": rnd.memorising_heads,
                "num_examples_claimed": rnd.claims,
                "update_norms": rnd.update_norms,
                "update_bound": rnd.update_bound,
                "aggregation": self.federation.aggregation,
                "server_lr": self.federation.server_lr,
                "metrics_dropped": rnd.metrics_dropped,
                "evaluated_round": rnd.evaluated_round,
                "evaluate": rnd.evaluate,
                "evaluate_global": rnd.evaluate_global,
                **({"previous_evaluation": rnd.previous_evaluation} if rnd.previous_evaluation else {}),
                "bytes_sent": rnd.bytes_sent,
                "bytes_received": rnd.bytes_received,
                "round_time_s": round(time.monotonic() - rnd.started, 3),
                "started_at": round(rnd.started_at, 3),
                "exchange_s": rnd.exchange_s,
                **self.round_extras,
            },
        )
        self.completed_rounds = plan.server_round
        meta = strategy_meta(self.config, self.sites)
        last = plan.server_round == len(self.plan)  # Strategy.start returns after this: the file must be there
        self.checkpoints.save(self.checkpoint_dir, plan.server_round, self.global_state, meta,
                              keep=self.checkpoint_keep, wait=last)  # fmt: skip

    # ---- helpers ----

    def _plan(self, server_round: int) -> RoundPlan:
        """`Strategy.start` counts rounds from 1 in every process; a resumed run continues the plan."""
        return self.plan[self.resumed_from + server_round - 1]

    def _messages(self, content: RecordDict, node_ids: list[int], message_type: str) -> list[Message]:
        size = content[ARRAYS].count_bytes()
        self._round.expecting = {node_id: self._name(node_id) for node_id in node_ids}
        self._round.sent_to.update(self._round.expecting)
        self._round.bytes_sent += size * len(node_ids)
        self._round.outgoing = list(self._construct_messages(content, node_ids, message_type))
        return self._round.outgoing

    def _replies(self, replies: Iterable[Message]) -> list[tuple[str, Message]]:
        """Replies with content, named by site; errors and sites that sent nothing are logged as failed."""
        good, seen = [], set()
        # An error reply may come from the SuperLink itself (e.g. "Node Unavailable"): name it after the node the
        # message was sent to, which the grid recorded in the message id it set when pushing.
        sent = {m.metadata.message_id: m.metadata.dst_node_id for m in self._round.outgoing if m.metadata.message_id}
        for msg in replies:
            node_id = sent.get(msg.metadata.reply_to_message_id, msg.metadata.src_node_id)
            seen.add(node_id)
            if msg.has_error():
                reason = (msg.error.reason or "").strip().splitlines()
                self._fail(self._name(node_id), f"error: {reason[-1] if reason else msg.error.code}")
                continue
            self._round.bytes_received += sum(r.count_bytes() for r in msg.content.array_records.values())
            refused = self._claim_name(node_id, msg)
            if refused is not None:
                self._fail(self._name(node_id), f"refused: {refused}")
                continue
            good.append((self._name(node_id), msg))
        for node_id, name in self._round.expecting.items():
            if node_id not in seen and name not in self._round.failed:
                self._fail(name, "no reply before the round timeout")
        return good

    def _note_constant_heads(self, site: str, metrics: Mapping[str, Any]) -> None:
        """Warn about, and keep for the history, the heads a site's reply flags as predicting a constant."""
        heads = constant_heads(metrics)
        if heads:
            self._round.constant_heads[site] = heads
            accuracy = ", ".join(f"{h} train acc {metrics.get(f'acc:{h}', float('nan')):.2f}" for h in heads)
            log.warning(
                "round %d: site %s: head %s predicts a constant (last local epoch; %s)",
                self._round.plan.server_round, site, ", ".join(heads), accuracy,
            )  # fmt: skip

    def _fail(self, site: str, reason: str) -> None:
        """Log and record why a site's reply (or part of it) was left out; a new reason joins the earlier ones."""
        log.warning("round %d: site %s left out: %s", self._round.plan.server_round, site, reason)
        earlier = self._round.failed.get(site)
        if earlier is None or reason not in earlier.split("; "):
            self._round.failed[site] = reason if earlier is None else f"{earlier}; {reason}"

    def _claim_name(self, node_id: int, msg: Message) -> str | None:
        """None when the reply's site name is its node's: the registered name, else one no other node holds
        (then learnt). Otherwise why the reply is refused."""
        record = msg.content.config_records.get(SITE)
        claimed = record.get(SITE_NAME) if record is not None else None
        registered = self.registered.get(node_id)
        if registered is not None:
            if claimed == registered:
                return None
            return f"claims site name {short_repr(claimed)}, registered as {registered!r}"
        if not isinstance(claimed, str) or not SITE_NAME_PATTERN.fullmatch(claimed):
            return f"site name {short_repr(claimed)} is not a plain name (letters, digits, '.', '_', '-')"
        holders = {n for n, name in self.sites.items() if name == claimed and n != node_id}
        taken = holders & (set(self.registered) | set(self._round.sent_to))
        if taken:
            return f"claims site name {claimed!r}, which node {min(taken)} holds"
        known = self.sites.get(node_id)
        if known is not None and known != claimed and node_id not in self._resumed_names:
            return f"claims site name {claimed!r} after replying as {known!r}"
        for n in holders:  # a node of an earlier process (ids change when a SuperNode restarts without a key)
            del self.sites[n]
        self.sites[node_id] = claimed
        self._resumed_names.discard(node_id)
        return None

    def _name(self, node_id: int) -> str:
        return self.sites.get(node_id, f"node-{node_id}")

    def _names(self, node_ids: Iterable[int]) -> list[str]:
        return [self._name(n) for n in node_ids]

    def _connected_nodes(self, grid: Grid, *, first: bool) -> list[int]:
        """All connected nodes; the first round of a process waits (up to the round timeout) for every site."""
        want = self.expected_sites if first else self.min_sites
        deadline = time.monotonic() + self.federation.round_timeout_s
        while True:
            nodes = list(grid.get_nodes())
            for node in nodes:
                if node.name:  # registered with the SuperLink (SuperNode authentication): that is its name
                    self.registered[node.node_id] = self.sites[node.node_id] = node.name
            if len(nodes) >= want or (len(nodes) >= self.min_sites and time.monotonic() > deadline):
                return sorted(node.node_id for node in nodes)
            if time.monotonic() > deadline:
                raise FederationError(f"{len(nodes)} sites connected, fewer than federation.min_sites {self.min_sites}")
            time.sleep(1.0)


def _metrics(msg: Message) -> dict[str, Any]:
    records = list(msg.content.metric_records.values())
    return dict(records[0]) if len(records) == 1 else {}


def constant_heads(metrics: Mapping[str, Any]) -> list[str]:
    """The heads a training reply flags as predicting a constant (`constant:<head>` non-zero), sorted."""
    return sorted(k.removeprefix(CONSTANT) for k, v in metrics.items() if k.startswith(CONSTANT) and v)


def _over_reporting_sites(
    aggregated: dict[str, Any], accepted: Sequence[tuple[str, Any, Mapping[str, Any]]]
) -> dict[str, Any]:
    """Flower's average counts a metric a site left out as 0. A flag (`constant:<head>`) keeps that (the weighted
    share of flagged sites); any other metric some sites left out (e.g. `auc:<head>` after an epoch that saw one
    class) is averaged over the sites that report it."""
    for key in list(aggregated):
        reporting = [m for _, _, m in accepted if key in m]
        if key.startswith(CONSTANT) or len(reporting) == len(accepted) or isinstance(aggregated[key], list):
            continue
        weights = [float(m[NUM_EXAMPLES]) for m in reporting]
        aggregated[key] = sum(w * float(m[key]) for w, m in zip(weights, reporting, strict=True)) / sum(weights)
    return aggregated


def _without_lists(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Per-site metrics for the history: counts kept, per-subject score lists left out."""
    return {k: v for k, v in metrics.items() if k not in ("scores", "labels")}


def _short(metrics: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
