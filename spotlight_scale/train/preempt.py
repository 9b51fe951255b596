"""Preemption: SIGUSR1 / SIGTERM ask the trainer to checkpoint and stop.

A SLURM job rendered from ``train.sbatch.tmpl`` gets ``--signal=B:USR1@120``:
two minutes before its time limit the batch script receives SIGUSR1 and
forwards it to the training tasks; the scheduler's SIGTERM (preemption,
``scancel``) reaches them directly. The handler only records the signal; the
training loop finishes the iteration in progress, all ranks agree to stop at
the same iteration (the flag travels with the loss all-reduce), rank 0 writes
the checkpoint, and :class:`TrainingInterrupted` ends the run. The job script
then requeues the job, which continues with ``--resume auto``.
"""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)

#: the signals that mean "checkpoint and stop"
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

#: exit status of ``spotlight-scale train`` after a checkpoint-and-stop (sysexits' EX_TEMPFAIL:
#: not finished, run again to continue)
EXIT_INTERRUPTED = 75


class TrainingInterrupted(RuntimeError):
    """Training stopped on a signal after saving a checkpoint at ``iteration``."""

    def __init__(self, iteration: int, signum: int | None, checkpoint):
        self.iteration, self.signum, self.checkpoint = iteration, signum, checkpoint
        why = signal.Signals(signum).name if signum else "a signal to another rank"
        super().__init__(f"stopped by {why} after iteration {iteration}; checkpoint "
                         f"{checkpoint}; continue with --resume auto")


class StopRequest:
    """Context manager: while active, SIGUSR1 and SIGTERM set :attr:`signum` instead of killing.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    Previous handlers are restored on exit.
    """

    def __init__(self):
        self.signum: int | None = None
        self._saved: dict[int, object] = {}

    def _handle(self, signum, frame):  # noqa: ARG002 (signal handler signature)
        if self.signum is None:
            log.warning("%s received: stopping after this iteration with a checkpoint",
                        signal.Signals(signum).name)
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._saved[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._saved.items():
            signal.signal(s, old)
        self._saved.clear()


def ignore_stop_signals(*_args) -> None:
    """DataLoader ``worker_init_fn``: workers leave stop signals to the main process."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
