"""Errors raised by the physics validation, each naming what was expected (the CLI prints them)."""

from __future__ import annotations


class EvaluationError(ValueError):
    """Base class: the inputs cannot be compared as asked."""


class GridMismatchError(EvaluationError):
    """The generated and reference showers do not share a cell grid or angle information."""


class InsufficientEventsError(EvaluationError):
    """Too few events for a metric: ``metric`` needs ``needed`` events ``where``, has ``got``."""

    def __init__(self, metric: str, needed: int, got: int, where: str = "") -> None:
        self.metric, self.needed, self.got, self.where = metric, needed, got, where
        place = f" {where}" if where else ""
        super().__init__(
            f"metric {metric!r} needs at least {needed} events{place}, got {got}; "
            f"provide more events, use coarser condition bins, or leave {metric!r} out of `metrics`"
        )
