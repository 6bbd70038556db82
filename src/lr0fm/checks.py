"""The Python API's argument checks (docs/api.md): TypeError for an argument of the wrong kind,
ValueError for a value out of range, each one line naming the function, the argument and what
it should be -- before anything is built or computed.

A leaf module (standard library only), so every layer's public functions can use it."""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, Sequence


def _shown(value: Any) -> str:
    return f"{type(value).__name__} {value!r:.60}"


def _arg(name: str) -> str:
    """An argument as messages name it: 'acc', or an item of one as written, weights['pets']."""
    return repr(name) if name.isidentifier() else name


def check_kinds(fn: str, arguments, optional: Sequence[str] = ()) -> None:
    """TypeError for an argument of the wrong kind (``arguments``: name, value, types, what it
    should be); None is allowed for the ``optional`` ones. A bool is not a whole number here."""
    for name, value, types, what in arguments:
        if value is None and name in optional:
            continue
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise TypeError(f"{fn}() argument {_arg(name)} must be {what}, not {_shown(value)}")


def number(fn: str, name: str, value: Any, what: str = "a number") -> float:
    """``value`` as a float: a real number (not a bool; TypeError) that is finite (ValueError)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}() argument {_arg(name)} must be {what}, not {_shown(value)}")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{fn}() argument {_arg(name)} is {value!r}; give a finite number")
    return x


def accuracy(fn: str, name: str, value: Any) -> float:
    """An accuracy: a fraction in [0, 1] (the command line refuses others too)."""
    x = number(fn, name, value, "an accuracy (a fraction in [0, 1])")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{fn}() argument {_arg(name)} is {value!r}, outside [0, 1]: accuracies are fractions "
                         "(divide a percentage by 100)")
    return x


def positive(fn: str, name: str, value: Any, what: str = "a number above 0") -> float:
    """A finite number above 0 (a weight, a rate)."""
    x = number(fn, name, value, what)
    if not x > 0:
        raise ValueError(f"{fn}() argument {_arg(name)} is {value!r}; it must be above 0")
    return x


def whole(fn: str, name: str, value: Any, least: int, what: str = "a whole number") -> int:
    """A whole number (not a bool; TypeError) of at least ``least`` (ValueError)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}() argument {_arg(name)} must be {what}, not {_shown(value)}")
    if value < least:
        raise ValueError(f"{fn}() argument {_arg(name)} is {value!r}; it must be at least {least}")
    return int(value)


def scores(fn: str, name: str, values: Any, symbol: str, keyed: bool = False) -> dict:
    """Per-dataset scores (γ or Γ: finite, >= 0) as a dict: a mapping dataset -> score, or (unless
    ``keyed``) any iterable of scores; at least one."""
    kinds = f"a mapping dataset -> {symbol}" + ("" if keyed else f" or a list of {symbol}")
    if isinstance(values, (str, bytes)) or not isinstance(values, Mapping if keyed else (Mapping, Iterable)):
        raise TypeError(f"{fn}() argument {_arg(name)} must be {kinds} (or a results DataFrame), not {_shown(values)}")
    items = dict(values.items() if isinstance(values, Mapping) else enumerate(values))
    if not items:
        raise ValueError(f"{fn}() of no {symbol} values is undefined; give at least one")
    out = {}
    for key, value in items.items():
        out[key] = x = number(fn, f"{name}[{key!r}]", value, f"a {symbol} value (a number)")
        if x < 0:
            raise ValueError(f"{fn}() argument {name}[{key!r}] is {value!r}; {symbol} is a ratio of accuracies, "
                             "never below 0")
    return out


def weights(fn: str, name: str, values: Any) -> dict:
    """WAR weights: a mapping dataset -> a finite number above 0."""
    if not isinstance(values, Mapping):
        raise TypeError(f"{fn}() argument {_arg(name)} must be a mapping dataset -> weight, not {_shown(values)}")
    return {dataset: positive(fn, f"{name}[{dataset!r}]", w, "a weight (a number above 0)")
            for dataset, w in values.items()}
