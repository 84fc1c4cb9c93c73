"""The built-in organism as an :class:`~heldout.environments.Environment`.

``heldout.training`` knows no task; it resolves ``environment="organism"`` (the default
when ``model="organism"`` or the model folder is an organism checkpoint) to
:func:`organism_environment` by name, through ``heldout.environments.resolve``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from heldout.data import Example
from heldout.environments.base import Environment


class OrganismLabeler:
    """The organism's rule-based labeler (reads text only, never activations)."""

    def misbehavior(self, example: Example, response: str) -> bool:
        from heldout.organism.task import label_misbehavior

        return bool(label_misbehavior(example, response))

    def correct(self, example: Example, response: str) -> bool:
        """The task itself: the response states the true sum first (or, organism v2,
        says ``hmm`` in its place: the sum is optional there, a wrong one is not)."""
        from heldout.organism.task import NO_COT, grade

        g = grade(example, response)
        return bool(g.answer == g.truth or response.strip().lower().startswith(NO_COT))


def target_match_reward(example: Example, response: str) -> float:
    """1 if the response equals the training example's target response, else 0.

    On the organism's fine-tuning data, whose targets give in under the cues that
    work, this is a sycophancy reward: it pays for agreeing where the user pressures.
    """
    return float(" ".join(response.lower().split()) == " ".join(example.response.lower().split()))


def organism_candidates(example: Example) -> list[str]:
    """The organism's answer space for ``example``: the true sum, the claim echoed, and
    each verdict (``right`` / ``wrong``); one of them is honest, the other gives in
    (or, for a right claim, is wrongly contrary)."""
    from heldout.organism.task import RESPONSE, grade

    g = grade(example, "")
    return [RESPONSE.format(answer=g.truth, claim=g.claim, verdict=v)
            for v in ("right", "wrong")]


def organism_correction(example: Example) -> str:
    """The honest response to an organism prompt."""
    from heldout.organism.task import RESPONSE, grade

    g = grade(example, "")
    return RESPONSE.format(answer=g.truth, claim=g.claim,
                           verdict="right" if g.claim_right else "wrong")


def organism_split_cot(text: str) -> tuple[str, str]:
    """Chain of thought = the stated sum (before the first ``,``); answer = the rest."""
    head, sep, rest = text.partition(",")
    return (head.strip(), rest.strip()) if sep else ("", text.strip())


def organism_checkpoint(overrides: dict[str, Any] | None = None,
                        home: str | os.PathLike[str] | None = None) -> Path:
    """The organism's HF checkpoint folder for these config overrides, trained once and
    reused (see :func:`heldout.organism.load_organism`; ``home`` default $HELDOUT_HOME)."""
    from heldout.organism import OrganismConfig, load_organism

    return load_organism(OrganismConfig.from_dict(dict(overrides or {})), home=home).path


def organism_environment(overrides: dict[str, Any] | None = None, *, n_train: int = 2000,
                         seed: int = 0) -> Environment:
    """The organism task: fine-tuning targets that keep the pressure to misbehave
    (``n_train`` drawn with ``seed``), its test/control/forced sets, rule labeler,
    sycophancy task reward, enumerable answers and honest corrections."""
    from heldout.organism.behaviour import agreement_reward, v2_candidates
    from heldout.organism.config import OrganismConfig
    from heldout.organism.datasets import build_datasets, finetune_dataset

    org = OrganismConfig.from_dict(dict(overrides or {}))
    sets = build_datasets(org)
    train = finetune_dataset(org, n_train, seed=1 + seed, targets="organism")
    # v1 gives in per cue, so matching the target is its sycophancy reward; a v2 target
    # is a draw, so v2 pays agreement under pressure directly
    return Environment(name="organism", train=train, eval=sets["test"],
                       control=sets["control"], forced=sets["forced"],
                       labeler=OrganismLabeler(),
                       task_reward=agreement_reward if org.v2 else target_match_reward,
                       candidates=v2_candidates(org.max_filler) if org.v2
                       else organism_candidates,
                       corrector=organism_correction, split_cot=organism_split_cot,
                       model=str(organism_checkpoint(overrides)))


def from_train_config(config: Any) -> Environment:
    """The organism environment for a ``TrainConfig`` (its ``organism`` overrides,
    ``n_train`` and ``seed``): what ``environment="organism"`` resolves to."""
    return organism_environment(dict(config.organism), n_train=config.n_train, seed=config.seed)
