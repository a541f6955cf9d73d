"""Parsers of CLI strings: text in, values for the option objects out.

The library never parses flag text; :mod:`convtool.cli.params` calls these while building the
frozen option objects (:mod:`convtool.options`).  Each raises :class:`OptionError` naming the
flag, with an example of what it expects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from convtool.errors import OptionError
from convtool.options import RankPolicy

__all__ = ["parse_numbers", "parse_budgets", "parse_rank", "parse_input_shapes", "input_shapes", "is_image_folder"]


def parse_numbers(text: str | None, option: str, kind: type = float) -> tuple | None:
    """``"0.5,0.25"`` -> ``(0.5, 0.25)`` for comma-separated option values; OptionError if bad:
    an empty item (``0.05,,0.1``, a trailing comma), a word, ``nan`` or ``inf``."""
    if text is None:
        return None
    items = str(text).replace(" ", "").split(",")
    if items == [""]:
        raise OptionError(f"{option} needs at least one value")
    if "" in items:
        raise OptionError(f"{option} has an empty item in {text!r}; separate the values with single commas")
    what = "integers" if kind is int else "numbers"
    try:
        values = tuple(kind(v) for v in items)
    except ValueError:
        raise OptionError(f"{option} must be comma-separated {what}, got {text!r}") from None
    bad = [item for item, v in zip(items, values) if not math.isfinite(v)]
    if bad:
        raise OptionError(f"{option} must be finite numbers, got {bad[0]!r} in {text!r}")
    return values


def parse_budgets(text: str) -> tuple[float, ...]:
    """``--budgets``: distinct drift budgets > 0, each a finite number (see :func:`parse_numbers`).

    A budget of 0 is refused (it allows no drift, so it converts nothing: the original, which
    the sweep already measures and draws); a budget given twice is refused (one point each).
    """
    values = parse_numbers(text, "--budgets")
    assert values is not None
    for v in values:
        if v <= 0:
            raise OptionError(f"--budgets must be > 0, got {v:g} (a budget of 0 allows no drift, so it converts "
                              "nothing: that point is the original, which the sweep measures anyway)")
    seen: set[float] = set()
    for v in values:
        if v in seen:
            raise OptionError(f"--budgets lists {v:g} twice; give each budget once")
        seen.add(v)
    return values


def parse_rank(rank: str | None, energy: float | None) -> RankPolicy:
    """``--rank`` / ``--energy`` -> a :class:`RankPolicy`; raises OptionError when invalid."""
    if rank is not None and energy is not None:
        raise OptionError("--rank and --energy are mutually exclusive")
    if energy is not None:
        if not 0.0 < energy <= 1.0:
            raise OptionError(f"--energy must be in (0, 1], got {energy}")
        return RankPolicy.energy(float(energy))
    if rank is None:
        return RankPolicy.fixed(1)
    text = str(rank).strip().lower()
    if text == "full":
        return RankPolicy.full()
    try:
        value = int(text)
    except ValueError:
        raise OptionError(f"--rank must be a positive integer or 'full', got {rank!r}") from None
    if value < 1:
        raise OptionError(f"--rank must be >= 1, got {value}")
    return RankPolicy.fixed(value)


def parse_input_shapes(specs: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Parse ``NAME=D0,D1,...`` strings (``--input-shape``) into ``{name: dims}``.

    Input names may contain ``=`` or ``:``; the *last* ``=`` separates name and dims.
    Dims are positive integers; ``NAME=`` (no dims) declares a scalar input.
    Raises :class:`OptionError` on bad syntax or when a name is given twice.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, sep, dims_text = str(spec).strip().rpartition("=")
        if not sep or not name:
            raise OptionError(f"--input-shape {spec!r}: expected NAME=DIMS, e.g. input=1,3,224,224")
        dims: list[int] = []
        if dims_text.strip():
            for part in dims_text.replace("x", ",").split(","):
                part = part.strip()
                try:
                    value = int(part)
                except ValueError:
                    raise OptionError(
                        f"--input-shape {spec!r}: dim {part!r} is not an integer "
                        "(expected NAME=DIMS, e.g. input=1,3,224,224)"
                    ) from None
                if value <= 0:
                    raise OptionError(f"--input-shape {spec!r}: dims must be positive, got {value}")
                dims.append(value)
        if name in shapes:
            raise OptionError(f"--input-shape given twice for input {name!r}")
        shapes[name] = tuple(dims)
    return shapes


def input_shapes(specs: Sequence[str] | None) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``--input-shape`` values as the options' ``(name, dims)`` pairs."""
    return tuple(parse_input_shapes(specs or []).items())


def is_image_folder(path: Path | None) -> bool:
    """``--calibration`` names a folder holding images (the only source the image options shape)."""
    if path is None or not Path(path).is_dir():
        return False
    from convtool.runtime.inputs import IMAGE_SUFFIXES

    return any(f.suffix.lower() in IMAGE_SUFFIXES for f in Path(path).iterdir() if f.is_file())
