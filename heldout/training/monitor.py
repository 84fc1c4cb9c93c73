"""The held-out monitor: what the fine-tuned model does, and what every probe still sees.

One evaluation (every N steps) measures, for the current model:

- **behaviour**, from a labeler that is not a probe: the model's own greedy outputs on
  the evaluation prompts, graded for misbehavior and task success;
- **every proxy** (activation probes and text monitors, trained against and held
  out) on four sets: the model's own outputs (``own``, labels from the labeler), the
  fixed labeled evaluation set (``fixed``), the teacher-forced misbehavior set
  (``forced``: separates "stopped misbehaving" from "the detector went blind") and the
  control set. Probes read them in forward passes of the current model with every
  probed site captured together. AUROC, and recall at ``fpr`` with the threshold
  calibrated on the *base* model's control set (``recall_base``) and on the *current*
  model's (``recall_cur``; for text monitors the control text does not change, so the
  two coincide);
- **retrained probes**: a fresh logistic probe per probed site, fitted on half of the
  fixed set's current activations and scored on the other half;
- **cross-model check**: the model's own outputs read by the frozen base model and the
  base probes (in the same batches as the current model, so KL needs no stored
  vocabulary-sized tensors): fires when the text is still detectable, quiet when the
  text itself evades. For a text monitor the check is the monitor on the new text;
- KL(current ‖ base) on the response tokens of the own outputs, and the number of
  principal components holding 90% of activation variance at each probed site.

Own outputs are generated with a KV cache (:mod:`heldout.generation`). The record
(:class:`~heldout.analysis.records.EvalRecord`) counts the model calls made
(``forward_calls``).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from heldout.activations.cache import pad_batch
from heldout.activations.selection import select_tokens
from heldout.analysis.metrics import auroc, threshold_at_fpr
from heldout.analysis.records import EvalRecord, MonitorRecord, RetrainedRecord, SetMetrics
from heldout.data import Dataset, Example, TokenizedExample, prompt_token_ids, tokenize_dataset
from heldout.environments.base import Environment, Labeler
from heldout.errors import ConfigError, DataError
from heldout.training.penalty import BoundProbe, capture
from heldout.training.proxies import BoundText


@dataclass(frozen=True)
class EvalSets:
    """The monitor's fixed data. Examples with ``messages`` are needed for generation."""

    eval: Dataset
    """Labeled (both labels) prompts + responses; its prompts are also generated from."""
    control: Dataset
    """Benign examples (label 0) for calibrating thresholds."""
    forced: Dataset | None = None
    """Teacher-forced misbehaving examples (label 1), or None."""

    @classmethod
    def first(cls, environment: Environment, n: int) -> EvalSets:
        """The environment's evaluation, control and forced sets, each cut to its first
        ``n`` examples (0: all of them); checked (DataError)."""
        def head(data: Dataset | None) -> Any:
            if data is None or n <= 0 or len(data) <= n:
                return data
            return Dataset(tuple(data.examples[:n]), source=data.source)

        sets = cls(eval=head(environment.eval), control=head(environment.control),
                   forced=head(environment.forced))
        sets.check()
        return sets

    def check(self) -> None:
        """DataError if a set is empty or lacks the labels it needs."""
        if len(self.eval) == 0:
            raise DataError("the evaluation split is empty",
                            fix="pass an evaluation set with both labels")
        labels = self.eval.labels
        if any(len(set(labels[h].tolist())) < 2 for h in halves(labels)):
            raise DataError("the evaluation split needs both labels (misbehavior 1 and benign "
                            "0), with at least two of each", fix="add examples of each label")
        if len(self.control) == 0 or (self.control.labels != 0).all():
            raise DataError("the control set has no negatives (label 0)",
                            fix="pass benign examples (label 0) to calibrate thresholds")
        if self.forced is not None and len(self.forced) and (self.forced.labels != 1).any():
            raise DataError("the forced set must hold only misbehavior (label 1)",
                            fix="teacher-force misbehaving responses and label them 1")


def halves(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of two halves with each class split evenly (alternating per class)."""
    a = np.sort(np.concatenate([np.flatnonzero(labels == c)[0::2] for c in (0, 1)]))
    b = np.sort(np.concatenate([np.flatnonzero(labels == c)[1::2] for c in (0, 1)]))
    return a, b


def _pca90(x: torch.Tensor) -> int:
    """Principal components holding 90% of the variance of rows ``x`` (n, d)."""
    x = x.double() - x.double().mean(0)
    var = torch.linalg.svdvals(x) ** 2
    if float(var.sum()) == 0.0:
        return 0
    return int((torch.cumsum(var, 0) / var.sum() < 0.9).sum()) + 1


def _recall(pos: np.ndarray, threshold: float) -> float | None:
    return float((pos > threshold).mean()) if len(pos) else None


def _auroc(y: np.ndarray, s: np.ndarray) -> float | None:
    return auroc(y, s) if 0 < y.sum() < len(y) else None


class Counter:
    """Counts forward calls of a model (a pre-hook on its embedding)."""

    def __init__(self, model: Any) -> None:
        self.calls = 0
        self._handle = model.embed.register_forward_pre_hook(self._tick)

    def _tick(self, *args: Any) -> None:
        self.calls += 1

    def close(self) -> None:
        self._handle.remove()


@dataclass
class Pass:
    """What one forward pass over a list of sequences yields (all detached, CPU)."""

    scores: dict[str, np.ndarray]
    """Probe name → one logit per sequence."""
    pooled: dict[str, torch.Tensor]
    """``site/selection`` → (n, d_model) pooled activations, for retraining and PCA."""
    hits: list[torch.Tensor]
    """Per sequence, whether the argmax predicts each response token."""
    ref_scores: dict[str, np.ndarray]
    """With a reference model: its probes' logits on the same sequences."""
    kl: torch.Tensor | None
    """With a reference model: KL(current ‖ reference) at every response-predicting
    position, concatenated over sequences (n_positions,)."""


def forward_pass(model: Any, tokens: Sequence[TokenizedExample], probes: Sequence[BoundProbe],
                 *, batch_size: int, pad_id: int, reference: Any = None) -> Pass:
    """One batched forward pass capturing every probe's site together; with
    ``reference``, the reference model reads the same batches (its probe scores and the
    per-position KL, reduced batch by batch: no vocabulary-sized tensor is kept)."""
    device = next(model.parameters()).device
    hooks, captured = capture([p.hook_name for p in probes], detach=True)
    ref_hooks, ref_captured = capture([p.hook_name for p in probes], detach=True)
    scores: dict[str, list[np.ndarray]] = {p.name: [] for p in probes}
    ref_scores: dict[str, list[np.ndarray]] = {p.name: [] for p in probes}
    pooled: dict[str, list[torch.Tensor]] = {}
    hits: list[torch.Tensor] = []
    kls: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(tokens), batch_size):
            batch = list(tokens[start:start + batch_size])
            ids, attention, response = pad_batch(batch, pad_id, device)
            logits = model.run_with_hooks(ids, fwd_hooks=hooks, attention_mask=attention)
            done: set[str] = set()
            for p in probes:
                acts = captured[p.hook_name]
                scores[p.name].append(p.example_scores(acts, response).float().cpu().numpy())
                sel = "mean" if p.selection == "tokens" else p.selection
                key = f"{p.site}/{sel}"
                if key not in done:
                    done.add(key)
                    pooled.setdefault(key, []).append(
                        select_tokens(acts.float(), response, sel).cpu())
            pred = response[:, 1:]
            hit = logits[:, :-1].argmax(-1) == ids[:, 1:]
            hits.extend(hit[row][pred[row]].cpu() for row in range(len(batch)))
            if reference is not None:
                # only the response positions, one model's logits alive at a time: the
                # peak stays near one forward pass of the model
                lp = F.log_softmax(logits[:, :-1][pred].float(), dim=-1)
                del logits
                ref_logits = reference.run_with_hooks(ids, fwd_hooks=ref_hooks,
                                                      attention_mask=attention)
                for p in probes:
                    ref_scores[p.name].append(p.example_scores(
                        ref_captured[p.hook_name], response).float().cpu().numpy())
                ref_lp = F.log_softmax(ref_logits[:, :-1][pred].float(), dim=-1)
                del ref_logits
                kls.append(F.kl_div(ref_lp, lp, log_target=True,
                                    reduction="none").sum(-1).cpu())
                del lp, ref_lp
            else:
                del logits

    def cat(parts: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}

    return Pass(scores=cat(scores), pooled={k: torch.cat(v) for k, v in pooled.items()},
                hits=hits, ref_scores=cat(ref_scores) if reference is not None else {},
                kl=torch.cat(kls) if kls else None)


def _metrics(y: np.ndarray, s: np.ndarray, t_base: float, t_cur: float) -> SetMetrics:
    pos = s[y == 1]
    return SetMetrics(auroc=_auroc(y, s), recall_base=_recall(pos, t_base),
                      recall_cur=_recall(pos, t_cur),
                      flag_rate_base=float((s > t_base).mean()) if len(s) else None)


def _forced(s_f: np.ndarray, s_c: np.ndarray, t_base: float, t_cur: float) -> SetMetrics:
    return SetMetrics(recall_base=_recall(s_f, t_base), recall_cur=_recall(s_f, t_cur),
                      flag_rate_base=None, auroc=_auroc(np.r_[np.ones(len(s_f)), np.zeros(len(s_c))],
                                   np.r_[s_f, s_c]) if len(s_f) else None)


class Monitor:
    """The held-out battery: evaluates a model against a frozen base model and a fixed
    set of proxies (activation probes and text monitors).

    base_model : the frozen starting model (a TransformerBridge), never trained.
    probes : bound probes (trained against and held out), fitted on the base model.
    sets : the fixed evaluation, control and forced data.
    texts : bound text monitors (trained against and held out).
    labeler : grades own outputs; without one, behaviour metrics are None and the
        ``own`` / ``cross_model`` sets are skipped (nothing is generated).
    read_on_base : names of probes trained against whose training signal was read on
        the frozen base model (a frozen-detector reward); their records say
        ``reads="base"``, and the verdict judges them by the cross-model check.
    """

    def __init__(self, base_model: Any, probes: Sequence[BoundProbe], sets: EvalSets, *,
                 texts: Sequence[BoundText] = (), labeler: Labeler | None = None,
                 fpr: float = 0.01, batch_size: int = 256, max_new_tokens: int = 8,
                 seed: int = 0, read_on_base: Collection[str] = ()) -> None:
        sets.check()
        against = {p.name for p in probes if p.spec.role == "train_against"}
        stray = sorted(set(read_on_base) - against)
        if stray:
            raise ConfigError(f"read_on_base names {', '.join(stray)}, which are not probes "
                              "trained against", fix=f"name probes among: "
                                                      f"{', '.join(sorted(against)) or 'none'}")
        self.read_on_base = frozenset(read_on_base)
        self.base = base_model
        self.probes = list(probes)
        self.texts = list(texts)
        self.sets = sets
        self.labeler = labeler
        self.fpr = fpr
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        tok = base_model.tokenizer
        self.tokenizer = tok
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        n_ctx = int(base_model.cfg.n_ctx)
        self._n_ctx = n_ctx
        self.tok_eval = tokenize_dataset(sets.eval, tok, max_length=n_ctx)
        self.tok_control = tokenize_dataset(sets.control, tok, max_length=n_ctx)
        self.tok_forced = tokenize_dataset(sets.forced, tok, max_length=n_ctx) \
            if sets.forced is not None and len(sets.forced) else []
        self.control_mask = sets.control.labels == 0
        base = self._pass(base_model, self.fixed_tokens)
        n_e, n_c = len(self.tok_eval), len(self.tok_control)
        self.base_thresholds = {
            p.name: threshold_at_fpr(base.scores[p.name][n_e:n_e + n_c][self.control_mask], fpr)
            for p in self.probes}
        self.base_pca90 = {k: _pca90(v[:n_e]) for k, v in base.pooled.items()}
        # Text monitors read fixed text on the fixed sets: scored once.
        forced = list(sets.forced) if sets.forced is not None else []
        self.text_fixed: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for t in self.texts:
            s_e = t.scores(list(sets.eval), [e.response for e in sets.eval])
            s_c = t.scores(list(sets.control), [e.response for e in sets.control])
            s_f = t.scores(forced, [e.response for e in forced])
            self.text_fixed[t.name] = (s_e, s_c[self.control_mask], s_f)
            self.base_thresholds[t.name] = threshold_at_fpr(s_c[self.control_mask], fpr)

    @property
    def fixed_tokens(self) -> list[TokenizedExample]:
        return self.tok_eval + self.tok_control + self.tok_forced

    def _pass(self, model: Any, tokens: Sequence[TokenizedExample], reference: Any = None
              ) -> Pass:
        return forward_pass(model, tokens, self.probes, batch_size=self.batch_size,
                            pad_id=self.pad_id, reference=reference)

    def generate(self, model: Any) -> tuple[list[Example], list[str]]:
        """Greedy own outputs (KV cache, left-padded batches) on the evaluation prompts."""
        from heldout.generation import generate

        examples = [e for e in self.sets.eval if e.messages is not None or e.prompt]
        prompts = [prompt_token_ids(e, self.tokenizer) for e in examples]
        out = generate(model, prompts, max_new_tokens=self.max_new_tokens,
                       eos_id=self.tokenizer.eos_token_id, pad_id=self.pad_id,
                       batch_size=self.batch_size)
        texts = [self.tokenizer.decode(o[0], skip_special_tokens=True).strip() for o in out]
        return examples, texts

    def evaluate(self, model: Any, step: int) -> EvalRecord:
        """One monitored evaluation of ``model``."""
        start = time.perf_counter()
        was_training = model.training
        model.eval()
        counter, base_counter = Counter(model), Counter(self.base)
        try:
            fields = self._evaluate(model, step)
        finally:
            counter.close()
            base_counter.close()
            if was_training:
                model.train()
        return EvalRecord(**fields, forward_calls={"current": counter.calls,
                                                   "base": base_counter.calls},
                          seconds=round(time.perf_counter() - start, 3))

    def _evaluate(self, model: Any, step: int) -> dict[str, Any]:
        own_tokens: list[TokenizedExample] = []
        own_texts: list[str] = []
        own_examples: list[Example] = []
        y_own = np.zeros(0, dtype=np.int64)
        rec: dict[str, Any] = {"step": step, "misbehavior_rate": None,
                               "task_accuracy": None, "n_own": 0, "n_own_misbehaving": None}
        if self.labeler is not None:
            own_examples, own_texts = self.generate(model)
            eos = self.tokenizer.eos_token or "."
            own = [Example(id=e.id, label=0, response=t or eos, messages=e.messages,
                           prompt=e.prompt, split="own", group=e.group)
                   for e, t in zip(own_examples, own_texts)]
            own_tokens = tokenize_dataset(Dataset(tuple(own)), self.tokenizer,
                                          max_length=self._n_ctx, truncate=True)
            y_own = np.array([self.labeler.misbehavior(e, t)
                              for e, t in zip(own_examples, own_texts)], dtype=np.int64)
            good = np.array([self.labeler.correct(e, t)
                             for e, t in zip(own_examples, own_texts)])
            rec.update(misbehavior_rate=float(y_own.mean()) if len(y_own) else None,
                       task_accuracy=float(good.mean()) if len(good) else None,
                       n_own=len(y_own), n_own_misbehaving=int(y_own.sum()))
        own_pass = self._pass(model, own_tokens, reference=self.base) if own_tokens else None
        cur = self._pass(model, self.fixed_tokens)
        rec["kl_to_base"] = float(own_pass.kl.mean()) \
            if own_pass is not None and own_pass.kl is not None and len(own_pass.kl) else None
        n_e, n_c = len(self.tok_eval), len(self.tok_control)
        sl_e, sl_c, sl_f = slice(0, n_e), slice(n_e, n_e + n_c), slice(n_e + n_c, None)
        rec["fixed_token_accuracy"] = float(torch.cat(cur.hits[sl_e]).float().mean())
        if rec["task_accuracy"] is None:
            rec["task_accuracy"] = rec["fixed_token_accuracy"]
        y_e = self.sets.eval.labels
        monitors: dict[str, MonitorRecord] = {}
        for p in self.probes:
            s = cur.scores[p.name]
            s_c = s[sl_c][self.control_mask]
            t_base, t_cur = self.base_thresholds[p.name], threshold_at_fpr(s_c, self.fpr)
            own_m = cross = None
            if own_pass is not None:
                own_m = _metrics(y_own, own_pass.scores[p.name], t_base, t_cur)
                cross = _metrics(y_own, own_pass.ref_scores[p.name], t_base, t_base)
            monitors[p.name] = MonitorRecord(
                kind="probe", role=p.spec.role, site=str(p.site), selection=p.selection,
                reads="base" if p.name in self.read_on_base else "policy",
                threshold_base=t_base, threshold_cur=t_cur,
                control_fpr_base=float((s_c > t_base).mean()),
                fixed=_metrics(y_e, s[sl_e], t_base, t_cur),
                forced=_forced(s[sl_f], s_c, t_base, t_cur), own=own_m, cross_model=cross)
        for t in self.texts:
            s_e, s_c, s_f = self.text_fixed[t.name]
            t_base = self.base_thresholds[t.name]
            own_m = None
            if self.labeler is not None:
                own_m = _metrics(y_own, t.scores(own_examples, own_texts), t_base, t_base)
            monitors[t.name] = MonitorRecord(
                kind="text", role=t.spec.role, part=t.spec.part, threshold_base=t_base,
                threshold_cur=t_base, control_fpr_base=float((s_c > t_base).mean()),
                fixed=_metrics(y_e, s_e, t_base, t_base),
                forced=_forced(s_f, s_c, t_base, t_base), own=own_m, cross_model=own_m)
        rec["monitors"] = monitors
        rec["retrained"] = self._retrained(cur, sl_e, sl_c)
        rec["pca90"] = {k: _pca90(v[sl_e]) for k, v in cur.pooled.items()}
        rec["pca90_base"] = dict(self.base_pca90)
        return rec

    def _retrained(self, cur: Pass, sl_e: slice, sl_c: slice) -> dict[str, RetrainedRecord]:
        """A fresh logistic probe per pooled site: fit on one half, score the other."""
        from heldout.probes.linear import LogisticProbe

        y = self.sets.eval.labels
        fit_rows, test_rows = halves(y)
        out: dict[str, RetrainedRecord] = {}
        for key, acts in cur.pooled.items():
            X = acts[sl_e].numpy().astype(np.float64)
            probe = LogisticProbe().fit(X[fit_rows], y[fit_rows])
            s_test = probe.decision_function(X[test_rows])
            s_c = probe.decision_function(acts[sl_c].numpy()[self.control_mask])
            y_test = y[test_rows]
            out[key] = RetrainedRecord(auroc=_auroc(y_test, s_test),
                                       recall_cur=_recall(s_test[y_test == 1],
                                                          threshold_at_fpr(s_c, self.fpr)))
        return out


def summary_line(record: EvalRecord, run: str | None = None) -> str:
    """One line per evaluation, named by its run: behaviour, then each proxy's recall
    on own misbehavior (base threshold), forced recall and the cross-model check."""
    def fmt(x: Any) -> str:
        return "  -  " if x is None else f"{x:.2f}"

    parts = [f"{run + ' ' if run else ''}step {record.step:>5}",
             f"misbehavior {fmt(record.misbehavior_rate)}",
             f"task {fmt(record.task_accuracy)}", f"KL {fmt(record.kl_to_base)}"]
    for name, m in record.monitors.items():
        own = m.own.recall_base if m.own else None
        cross = m.cross_model.recall_base if m.cross_model and m.kind == "probe" else None
        parts.append(f"{name} recall {fmt(own)} forced {fmt(m.forced.recall_base)}"
                     + (f" base-reads {fmt(cross)}" if m.kind == "probe" else ""))
    for key, r in record.retrained.items():
        parts.append(f"retrained {key} {fmt(r.recall_cur)}")
    return " | ".join(parts)
