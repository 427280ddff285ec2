"""Keeping training bitwise unchanged across a snapshot (train flags and RNG states restored), and the one
background thread that writes snapshots to the store in order."""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


@contextmanager
def training_state_preserved(module: torch.nn.Module | None):
    """Restore every submodule's train flag and the torch (CPU, CUDA), numpy and Python RNG states on exit."""
    modes = [(m, m.training) for m in module.modules()] if isinstance(module, torch.nn.Module) else []
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    states = (
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
        torch.cuda.get_rng_state_all() if cuda else None,
    )
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda:
            torch.cuda.set_rng_state_all(states[3])
        for m, training in modes:
            m.training = training


class Writer:
    """One daemon thread that runs store writes in submission order; its first error re-raises on the caller.

    After an error, later writes are dropped (never written behind a failed one), so the store keeps a prefix.
    """

    def __init__(self, maxsize: int):
        self._queue: queue.Queue[Callable[[], Any] | None] = queue.Queue(maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="trajlab-store-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    job()
            except BaseException as e:  # noqa: BLE001 - handed to the training thread
                self._error = e
            finally:
                self._queue.task_done()

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, job: Callable[[], Any]) -> None:
        self.check()
        self._queue.put(job)

    def flush(self) -> None:
        self._queue.join()
        self.check()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self.check()
