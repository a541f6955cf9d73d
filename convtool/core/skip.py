"""Not applicable, because ...: the one rejection type of selection, planning and refit.

Every step that may decline a layer returns either its result or a :class:`Skip` whose
``reason`` a user reads as it is ("kernel is 1x1", "rank 8 would not reduce MACs (x1.89)",
"layer too large for data-aware moments at this rank").  Callers test ``isinstance(x, Skip)``;
``str(skip)`` is the reason, so messages built from it read as before.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Skip"]


@dataclass(frozen=True)
class Skip:
    """A step that does not apply, and the user-readable reason why."""

    reason: str

    def __str__(self) -> str:
        return self.reason
