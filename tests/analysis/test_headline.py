"""The headline figure draws what the verdict judges."""

from __future__ import annotations

from dataclasses import replace

from heldout.analysis.headline import plot_headline
from tests.analysis.test_verdict import CONTROL, probe_run


def _lines(fig, title_start: str) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    ax = next(a for a in fig.axes if a.get_title().startswith(title_start))
    return {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}


def test_the_trained_against_line_is_the_policy_reading_or_the_base_reading() -> None:
    records = probe_run(0.8, own=0.1, cross=0.7)
    lines = _lines(plot_headline(records, CONTROL), "monitor recall")
    assert lines["p (trained against)"] == [0.9, 0.1]  # own outputs, the policy's activations
    # a frozen-detector probe: the base model reading the run's text is what it trained against
    records[-1].monitors["p"] = replace(records[-1].monitors["p"], reads="base")
    lines = _lines(plot_headline(records, CONTROL), "monitor recall")
    assert lines["p (trained against, base model reads the text)"] == [0.9, 0.7]
    assert lines["h (held out)"] == [0.9, 0.8]
