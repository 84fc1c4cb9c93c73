"""The typed evaluation record: round trip, and strict reading (a renamed, missing or
unknown field is an error that names it, never a silent n/a)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from heldout.analysis.records import (
    EvalRecord,
    MonitorRecord,
    RetrainedRecord,
    SetMetrics,
    read_records,
)
from heldout.errors import DataError


def planted(step: int = 3) -> EvalRecord:
    """A record with one probe (held out) and one text monitor (trained against)."""
    sets = SetMetrics(auroc=0.9, recall_base=0.8, recall_cur=0.7, flag_rate_base=0.4)
    return EvalRecord(
        step=step, misbehavior_rate=0.5, task_accuracy=0.9, n_own=10, kl_to_base=0.2,
        fixed_token_accuracy=0.95,
        monitors={
            "p": MonitorRecord(kind="probe", role="held_out", threshold_base=1.0,
                               threshold_cur=1.2, control_fpr_base=0.01, fixed=sets,
                               forced=SetMetrics(auroc=None, recall_base=0.9, recall_cur=None,
                                                 flag_rate_base=None), own=sets,
                               cross_model=sets, site="resid_post:1", selection="last"),
            "cot": MonitorRecord(kind="text", role="train_against", threshold_base=0.5,
                                 threshold_cur=0.5, control_fpr_base=0.0, fixed=sets,
                                 forced=sets, own=None, cross_model=None, part="cot")},
        retrained={"resid_post:1/last": RetrainedRecord(auroc=0.99, recall_cur=0.9)},
        pca90={"resid_post:1/last": 5}, pca90_base={"resid_post:1/last": 6},
        n_own_misbehaving=5, forward_calls={"current": 2, "base": 1}, seconds=0.5)


def test_round_trip_through_json() -> None:
    rec = planted()
    back = EvalRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert back == rec
    assert back.against() == ["cot"]
    assert back.monitors["cot"].own is None and back.monitors["cot"].site is None
    assert isinstance(back.retrained["resid_post:1/last"], RetrainedRecord)


def test_read_records_from_every_source(tmp_path: Path) -> None:
    recs = [planted(0), planted(5)]
    lines = "".join(json.dumps(r.to_dict()) + "\n" for r in recs) + "\n"
    (tmp_path / "evals.jsonl").write_text(lines)
    assert read_records(tmp_path) == recs
    assert read_records(tmp_path / "evals.jsonl") == recs
    assert read_records(SimpleNamespace(evaluations=[r.to_dict() for r in recs])) == recs
    assert read_records(recs) == recs
    with pytest.raises(DataError, match="no monitor log"):
        read_records(tmp_path / "nowhere")


def _dict() -> dict[str, Any]:
    return planted().to_dict()


def test_unknown_field_is_named() -> None:
    data = _dict()
    data["recall"] = 0.3
    with pytest.raises(DataError, match=r"unknown field\(s\) recall"):
        EvalRecord.from_dict(data)
    data = _dict()
    data["monitors"]["p"]["own"]["recall_at_fpr"] = 0.3
    with pytest.raises(DataError, match=r"monitor 'p'.own: unknown field\(s\) recall_at_fpr"):
        EvalRecord.from_dict(data)


def test_missing_field_is_named() -> None:
    data = _dict()
    del data["fixed_token_accuracy"]
    with pytest.raises(DataError, match=r"missing field\(s\) fixed_token_accuracy"):
        EvalRecord.from_dict(data)
    data = _dict()
    del data["monitors"]["cot"]["kind"]
    with pytest.raises(DataError, match=r"monitor 'cot': missing field\(s\) kind"):
        EvalRecord.from_dict(data)
    data = _dict()
    del data["retrained"]["resid_post:1/last"]["recall_cur"]
    with pytest.raises(DataError, match=r"retrained 'resid_post:1/last': missing"):
        EvalRecord.from_dict(data)


def test_an_old_record_with_probes_says_to_rerun(tmp_path: Path) -> None:
    data = _dict()
    data["probes"] = data.pop("monitors")
    (tmp_path / "evals.jsonl").write_text(json.dumps(data) + "\n")
    with pytest.raises(DataError) as err:
        read_records(tmp_path)
    text = str(err.value)
    assert "'probes' where heldout now writes 'monitors'" in text and "rerun" in text


def test_kind_and_role_are_checked_and_set_metrics_have_no_silent_defaults() -> None:
    data = _dict()
    data["monitors"]["cot"]["kind"] = "vibes"
    with pytest.raises(DataError, match="kind is 'vibes'"):
        EvalRecord.from_dict(data)
    data = _dict()
    del data["monitors"]["cot"]["own"]  # optional at the record level: None
    assert EvalRecord.from_dict(data).monitors["cot"].own is None
    data = _dict()
    del data["monitors"]["p"]["fixed"]["recall_cur"]
    with pytest.raises(DataError, match=r"fixed: missing field\(s\) recall_cur"):
        EvalRecord.from_dict(data)
    data = _dict()
    data["monitors"] = [1, 2]
    with pytest.raises(DataError, match="monitors is list"):
        EvalRecord.from_dict(data)


def test_a_record_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(DataError, match="not a JSON object"):
        EvalRecord.from_dict([1, 2])
