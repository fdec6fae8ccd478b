"""Search spaces of a sweep: what to vary, read from ``"50,100"`` lists and ``"0.01:1:log"``
ranges, and expanded into the list of trial configs.

A space maps parameter names to values: a single value, a list (a grid axis), or a
:class:`Range` (drawn at random). The trials are every combination of the lists, each with
``samples`` fresh draws of the ranges (Ray Tune's convention: ``grid x samples``); draws come
from a seeded generator, so the same space gives the same trials.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

# name: (kind, default); kind is int, float, bool, "seed" (a whole number >= 0) or the choices
PARAMS = {
    "hidden": (int, 50),
    "lr": (float, 0.1),
    "batch_size": (int, 100),
    "iters": (int, 10_000),
    "epochs": (int, None),
    "dtype": (("float32", "float64"), "float32"),
    "sampling": (("replacement", "epoch"), "replacement"),
    "augment": (bool, False),
    "seed": ("seed", 0),
}
TRUE, FALSE = ("yes", "true", "on", "1"), ("no", "false", "off", "0")


class SweepSpecError(ValueError):
    """A sweep's space cannot be read; the message names the parameter and how to write it."""


@dataclass(frozen=True)
class Range:
    """Values from ``low`` to ``high`` drawn uniformly, or log-uniformly when ``log``;
    whole numbers (rounded) for integer parameters."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def draw(self, rng: np.random.Generator):
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        if self.integer:
            return int(min(max(round(value), self.low), self.high))
        return float(value)

    def __str__(self):
        fmt = (lambda v: str(int(v))) if self.integer else (lambda v: f"{v:g}")
        return f"{fmt(self.low)}:{fmt(self.high)}" + (":log" if self.log else "")


def value_label(value) -> str:
    """A parameter's value as tables and figures show it: ``0.3444``, ``100``, ``yes``."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_value(name: str, value):
    """``value`` as parameter ``name``'s type, or a :class:`SweepSpecError` saying what is
    allowed."""
    kind = PARAMS[name][0]
    where = f"{flag(name)} {value!r}"
    if isinstance(kind, tuple):
        if value not in kind:
            raise SweepSpecError(f"{where}: must be one of {', '.join(kind)}")
        return value
    if kind is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        text = str(value).strip().lower()
        if text in TRUE or text in FALSE:
            return text in TRUE
        raise SweepSpecError(f"{where}: must be yes or no (e.g. {flag(name)} no,yes)")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SweepSpecError(f"{where}: not a number") from None
    if kind is float:
        if not (math.isfinite(number) and number > 0):
            raise SweepSpecError(f"{where}: must be a positive number (e.g. {flag(name)} 0.1)")
        return number
    lowest = 0 if kind == "seed" else 1
    if not (math.isfinite(number) and number == int(number) and number >= lowest):
        what = "a whole number >= 0" if kind == "seed" else "a positive whole number"
        raise SweepSpecError(f"{where}: must be {what}")
    return int(number)


def parse_range(name: str, text: str) -> Range:
    """``"LOW:HIGH"`` or ``"LOW:HIGH:log"`` for a numeric parameter."""
    kind = PARAMS[name][0]
    parts = text.split(":")
    usage = (f"{flag(name)} {text!r}: a range is LOW:HIGH (uniform) or LOW:HIGH:log "
             f"(log-uniform), e.g. {flag(name)} " + ("0.01:1:log" if kind is float else "32:256"))
    if kind not in (int, float, "seed"):
        raise SweepSpecError(f"{flag(name)} {text!r}: {name} takes a list of values, not a range")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].strip().lower() != "log"):
        raise SweepSpecError(usage)
    try:
        low, high = (float(p) for p in parts[:2])
    except ValueError:
        raise SweepSpecError(usage) from None
    for bound in (low, high):
        check_value(name, bound)
    if not low < high:
        raise SweepSpecError(f"{flag(name)} {text!r}: LOW must be below HIGH")
    return Range(low, high, log=len(parts) == 3, integer=kind is not float)


def parse_axis(name: str, value):
    """One parameter's entry of a space: a list of checked values, or a :class:`Range`.

    Strings are read as the command line writes them: ``"50,100"``, ``"0.01:1:log"``.
    """
    if name not in PARAMS:
        raise SweepSpecError(f"unknown sweep parameter {name!r}; the parameters are "
                             f"{', '.join(PARAMS)}")
    if isinstance(value, Range):
        return value
    if isinstance(value, str):
        if ":" in value:
            return parse_range(name, value.strip())
        items = [v.strip() for v in value.split(",")]
        if value.strip() == "" or "" in items:
            raise SweepSpecError(f"{flag(name)} {value!r}: empty value; give one or more values "
                                 f"separated by commas, e.g. {flag(name)} "
                                 f"{example(name)}")
        value = items
    elif not isinstance(value, (list, tuple, np.ndarray)):
        value = [value]
    if len(value) == 0:
        raise SweepSpecError(f"{flag(name)}: empty list; give one or more values, e.g. "
                             f"{flag(name)} {example(name)}")
    return [check_value(name, v) for v in value]


def example(name: str) -> str:
    kind = PARAMS[name][0]
    if isinstance(kind, tuple):
        return ",".join(kind)
    return {bool: "no,yes", float: "0.05,0.1,0.5"}.get(kind, "50,100")


def expand(space: dict, samples: int | None = None, search_seed: int = 0) -> list[dict]:
    """The trial configs of ``space``: every combination of its lists, times ``samples``
    draws of its ranges. Each config has every parameter (defaults filled in); ``epochs``
    appears only when given (``iters`` is then worked out per trial from the data)."""
    axes = {name: parse_axis(name, value) for name, value in space.items()}
    if "iters" in axes and "epochs" in axes:
        raise SweepSpecError("give --iters or --epochs, not both")
    ranges = {n: a for n, a in axes.items() if isinstance(a, Range)}
    grid = {n: a for n, a in axes.items() if not isinstance(a, Range)}
    if ranges and not samples:
        names = ", ".join(f"{flag(n)} {r}" for n, r in ranges.items())
        raise SweepSpecError(f"{names} is a range: add --samples N (samples=N) to draw N values "
                             "at random, or list values separated by commas")
    if samples is not None and (not isinstance(samples, (int, np.integer)) or samples < 1):
        raise SweepSpecError(f"--samples must be a positive whole number, got {samples!r}")
    if samples and not ranges:
        raise SweepSpecError("--samples draws values from ranges such as --lr 0.01:1:log, "
                             "and no parameter has a range")
    defaults = {n: d for n, (_, d) in PARAMS.items() if n != "epochs"}
    if "epochs" in axes:
        defaults.pop("iters")
    rng = np.random.default_rng(search_seed)
    configs = []
    for _ in range(samples or 1):
        drawn = {n: r.draw(rng) for n, r in ranges.items()}
        for combo in itertools.product(*grid.values()):
            configs.append({**defaults, **dict(zip(grid, combo)), **drawn})
    return [{n: c[n] for n in PARAMS if n in c} for c in configs]


def swept(configs: list[dict]) -> list[str]:
    """The parameters that take more than one value across ``configs``, in :data:`PARAMS` order
    (``iters`` not when it follows from ``epochs``)."""
    derived = {"iters"} if any("epochs" in c for c in configs) else set()
    return [n for n in PARAMS
            if n not in derived and len({repr(c.get(n)) for c in configs}) > 1]
