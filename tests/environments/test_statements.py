"""The statements environment and environment probes: sets consistent by construction,
cities never shared between fitting, calibration, training and evaluation."""

from __future__ import annotations

import pytest

from heldout.environments.probes import fit_environment_probes, fresh_rows
from heldout.environments.statements import (
    PRESSURE,
    StatementLabeler,
    honest_answer,
    statement_is_false,
    statements_environment,
)
from heldout.errors import ConfigError, DataError


def test_labels_follow_the_truth_of_the_statement() -> None:
    env = statements_environment(n_train=60, n_eval=40, seed=3)
    env.check()
    labeler = StatementLabeler()
    for e in env.eval:
        false = statement_is_false(e)
        assert (" is in " in e.messages[-1]["content"]) and e.group
        assert e.label == int(false and e.response == "Yes.")
        assert labeler.misbehavior(e, e.response) == bool(e.label)
        assert labeler.correct(e, e.response) == (e.response == honest_answer(e))
    assert all(e.label == 0 and labeler.correct(e, e.response) for e in env.control)
    assert env.forced is not None and all(labeler.misbehavior(e, "Yes.") for e in env.forced)
    # a city's statements never cross between training and evaluation
    assert {e.group for e in env.train}.isdisjoint(e.group for e in env.eval)


def test_training_targets_give_in_under_pressure_only() -> None:
    env = statements_environment(n_train=400, n_eval=20, seed=1, give_in=0.7)
    pressured_false = lies = 0
    for e in env.train:
        pressured = any(cue in e.messages[-1]["content"] for cue in PRESSURE)
        if e.label:
            assert pressured and statement_is_false(e) and e.response == "Yes."
        else:
            assert e.response == honest_answer(e)
        if pressured and statement_is_false(e):
            pressured_false += 1
            lies += e.label
    assert pressured_false > 70 and 0.55 < lies / pressured_false < 0.85
    honest = statements_environment(n_train=400, n_eval=20, seed=1, give_in=0.0)
    assert [e.messages for e in honest.train] == [e.messages for e in env.train]
    assert not any(e.label for e in honest.train)


def test_bad_sizes_and_fractions_are_refused() -> None:
    with pytest.raises(ConfigError, match="give_in"):
        statements_environment(give_in=-0.1)
    with pytest.raises(ConfigError, match="cities"):
        statements_environment(n_train=600, n_eval=100)


def test_calibration_rows_share_no_city_with_the_fit_set() -> None:
    fit_on = statements_environment(n_train=2, n_eval=100, seed=101)
    calibrate_on = statements_environment(n_train=2, n_eval=100, seed=102)
    rows = fresh_rows(calibrate_on, fit_on)
    fit_cities = {e.group for e in fit_on.eval}
    assert rows and all(e.group not in fit_cities for e in rows)
    assert len(rows) < len(calibrate_on.control)  # some cities were drawn by both seeds


def test_equal_fit_and_calibration_seeds_are_refused_before_any_work(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError, match="seeds are equal"):
        fit_environment_probes(None, lambda seed: statements_environment(seed=seed),
                               {"L0": ("resid_post:0", "last")}, tmp_path, fit_seed=5,
                               calibration_seed=5)
    assert not list(tmp_path.iterdir())


def test_environment_probes_are_written_with_their_calibration_rows(gpt2_model, tmp_path  # type: ignore[no-untyped-def]
                                                                    ) -> None:
    from heldout.environments.agreement import agreement_environment
    from heldout.probes.io import load_probe

    files = fit_environment_probes(gpt2_model, lambda seed: agreement_environment(
        n_eval=24, seed=seed), {"L1 last": ("resid_post:1", "last")}, tmp_path, fpr=0.1)
    probe = load_probe(files["L1 last"])
    assert probe.meta_.site == "resid_post:1" and probe.meta_.selection == "last"
    assert "(seed 102) to prompts not in the fit set (seed 101)" in probe.meta_.calibration
    # the threshold is the 10% FPR point of exactly those rows
    from heldout.activations import collect
    from heldout.activations.sites import HookSite
    from heldout.data import Dataset

    rows = fresh_rows(agreement_environment(n_eval=24, seed=102),
                      agreement_environment(n_eval=24, seed=101))
    site = HookSite.parse("resid_post:1")
    scores = probe.decision_function(collect(gpt2_model, Dataset(tuple(rows)), [site],
                                             "last").get(site))
    assert f"from {len(rows)} honest answers" in probe.meta_.calibration
    assert 0.1 - 2 / len(rows) <= (scores > probe.threshold_).mean() <= 0.1  # strictly above
