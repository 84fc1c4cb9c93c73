"""A rule monitor: a regex, or a user's ``f(prompt, text)``, flags response text.

The cheapest text monitor, and the one a researcher writes first: "the chain of thought
mentions the leaked answer", "the answer says yes while the reasoning says no".
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from heldout.errors import ConfigError, DataError
from heldout.monitors.base import check_pairs

RuleFunction = Callable[[str, str], Any]
"""``f(prompt, text) -> bool | float in [0, 1]``: the suspicion of one response part."""


def import_function(spec: str) -> RuleFunction:
    """The callable named by ``"module:function"`` (``function`` may be dotted,
    e.g. ``"pkg.mod:Class.method"``), imported from the Python path.

    ConfigError names the part that failed: the form of the string, the module, the
    attribute, or a non-callable result.
    """
    from heldout.imports import import_object

    obj = import_object(spec, "rule function")
    if not callable(obj):
        raise ConfigError(f"rule function {spec!r} is a {type(obj).__name__}, not callable",
                          fix="point it at a function f(prompt, text) -> bool | float")
    return obj  # type: ignore[no-any-return]


class RuleMonitor:
    """Flags response text with a regex or a function.

    pattern : a regular expression; a text where ``re.search`` finds it scores 1.0,
        others 0.0.
    function : a callable ``f(prompt, text)`` or a ``"module:function"`` string imported
        from the Python path; it returns a bool or a number in [0, 1].

    Give exactly one. Both are checked here (a bad regex, an unimportable or
    non-callable function raise ConfigError), so a run fails before any work.
    """

    def __init__(self, pattern: str | None = None,
                 function: RuleFunction | str | None = None) -> None:
        if (pattern is None) == (function is None):
            raise ConfigError("a rule monitor needs exactly one of pattern or function "
                              f"(got {'both' if pattern is not None else 'neither'})",
                              fix="pass pattern='regex' or function='module:function'")
        self.pattern = pattern
        self.function = function
        self._regex: re.Pattern[str] | None = None
        self._function: RuleFunction | None = None
        if pattern is not None:
            if not isinstance(pattern, str):
                raise ConfigError(f"rule pattern must be a string, got "
                                  f"{type(pattern).__name__}", fix="pass a regex string")
            try:
                self._regex = re.compile(pattern)
            except re.error as err:
                raise ConfigError(f"rule pattern {pattern!r} is not a valid regex ({err})",
                                  fix="fix the regular expression (escape literal "
                                      "characters such as '(' or '?' with a backslash)"
                                  ) from err
        elif isinstance(function, str):
            self._function = import_function(function)
        elif callable(function):
            self._function = function
        else:
            raise ConfigError(f"rule function is a {type(function).__name__}, not callable "
                              "or a 'module:function' string",
                              fix="pass a function f(prompt, text) -> bool | float")

    def __repr__(self) -> str:
        what = (f"pattern={self.pattern!r}" if self.pattern is not None
                else f"function={getattr(self._function, '__qualname__', self.function)!r}")
        return f"RuleMonitor({what})"

    def score_texts(self, prompts: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Suspicion per pair: float64 array of shape (n,), values in [0, 1]."""
        prompts, texts = check_pairs(prompts, texts)
        if self._regex is not None:
            return np.array([1.0 if self._regex.search(t) else 0.0 for t in texts])
        return np.array([self._call(i, p, t) for i, (p, t) in enumerate(zip(prompts, texts))],
                        dtype=np.float64)

    def _call(self, i: int, prompt: str, text: str) -> float:
        name = getattr(self._function, "__qualname__", repr(self._function))
        shown = text if len(text) <= 80 else text[:77] + "..."
        try:
            value = self._function(prompt, text)  # type: ignore[misc]
        except Exception as err:  # a user's callable: show its failure with the input
            raise DataError(f"rule function {name} raised {type(err).__name__}: {err} on "
                            f"text {i} ({shown!r})",
                            fix="make it accept (prompt, text) strings and return a bool "
                                "or a number in [0, 1]") from err
        if isinstance(value, (bool, np.bool_)):
            return float(value)
        if isinstance(value, numbers.Real) and math.isfinite(value) and 0 <= float(value) <= 1:
            return float(value)
        raise DataError(f"rule function {name} returned {value!r} ({type(value).__name__}) "
                        f"on text {i} ({shown!r}), not a bool or a number in [0, 1]",
                        fix="return True/False or a suspicion between 0 and 1")


__all__ = ["RuleFunction", "RuleMonitor", "import_function"]
