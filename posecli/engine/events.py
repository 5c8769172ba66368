"""How the training loop talks to the user: the ``TrainReport`` it is given (``report.RichTrainReport`` in the CLI,
``SilentReport`` for library use and for every process but rank 0). The engine itself never prints."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from posecli.checkpoints import LoadReport
    from posecli.engine.data import RunData
    from posecli.engine.train import Trainer


class TrainReport(Protocol):
    """What the loop tells the user. ``report.RichTrainReport`` prints it; ``SilentReport`` drops it."""

    def message(self, text: str) -> None:
        """One line (Rich markup allowed)."""

    def note(self, text: str) -> None:
        """A 'note:' line: something the user may want to change."""

    def download(self, description: str, total: int | None) -> AbstractContextManager[Callable[[int], None]]:
        """A download's progress: yields advance(number of bytes)."""

    def loaded(self, source: str, mode: str, report: LoadReport) -> None:
        """What loading the starting checkpoint did."""

    def run_setup(self, trainer: Trainer, data: RunData, lr: float, lr_note: str) -> None:
        """The set-up: device and precision, data, model, batch and schedule."""

    def epoch_bar(self, epoch: int, total_epochs: int, steps: int, done: int) -> AbstractContextManager[Any]:
        """A live bar over an epoch's steps: yields update(loss, lr, data_time, step_time) called after each step."""

    def epoch_done(
        self, epoch: int, total_epochs: int, stats: dict[str, float], lr: float, seconds: float, data_bound: bool
    ) -> None:
        """One line per epoch: mean loss, lr, data and step times."""

    def validation(self, metrics: dict[str, float], title: str, warnings: Sequence[str] = ()) -> None:
        """The metrics of an evaluation, and its caveats (e.g. defaulted OKS sigmas)."""

    def interrupted(self, text: str) -> None:
        """The run stopped on Ctrl-C; ``text`` says what was saved."""

    def result(self, text: str) -> None:
        """The final result line."""


class SilentReport:
    """A TrainReport that shows nothing (library use, and every process but rank 0)."""

    def message(self, text: str) -> None:
        """Drop the line."""

    def note(self, text: str) -> None:
        """Drop the note."""

    def download(self, description: str, total: int | None) -> AbstractContextManager[Callable[[int], None]]:
        """No progress shown."""
        return contextlib.nullcontext(lambda n: None)

    def loaded(self, source: str, mode: str, report: LoadReport) -> None:
        """Drop the load report."""

    def run_setup(self, trainer: Trainer, data: RunData, lr: float, lr_note: str) -> None:
        """Drop the set-up."""

    def epoch_bar(self, epoch: int, total_epochs: int, steps: int, done: int) -> AbstractContextManager[Any]:
        """No bar."""
        return contextlib.nullcontext(lambda loss, lr, data, step: None)

    def epoch_done(
        self, epoch: int, total_epochs: int, stats: dict[str, float], lr: float, seconds: float, data_bound: bool
    ) -> None:
        """Drop the epoch line."""

    def validation(self, metrics: dict[str, float], title: str, warnings: Sequence[str] = ()) -> None:
        """Drop the metrics."""

    def interrupted(self, text: str) -> None:
        """Drop the message."""

    def result(self, text: str) -> None:
        """Drop the result."""
