"""The faces of concurrent requests through the network together.

Each request finds its faces on its own thread (detection runs in parallel); the network then runs on one thread
that takes every face waiting at that moment as one batch. Nothing waits for a batch to fill: a request that finds
the network idle goes through at once (no added latency for a lone caller), and requests that arrive while a batch
runs share the next one. Under load this means fewer, larger network calls, where the per-call overhead (locking,
Python, the interpreter's threads starting up) is paid once per batch instead of once per request
(benchmarks/serve_load.py measures both ways).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any

from mtfer.core import faces
from mtfer.core.inference import Predictor

MAX_BATCH_FACES = 64  # faces per network call: bounds memory and keeps one big photo from delaying the rest long
_STOP = None


class FaceBatcher:
    """`probabilities(found)` blocks until the faces have been through the network, batched with other callers'."""

    def __init__(self, predictor: Predictor, max_faces: int = MAX_BATCH_FACES):
        self.predictor, self.max_faces = predictor, max_faces
        self.calls = 0  # network calls made, and the requests they answered: their ratio is the batching achieved
        self.requests = 0
        self._queue: queue.SimpleQueue[tuple[list[faces.Face], Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="mtfer-face-batcher", daemon=True)
        self._thread.start()

    def probabilities(self, found: list[faces.Face]) -> list[dict[str, dict[str, float]]]:
        """Each face's probabilities by class name, as :meth:`Predictor.predict_groups` gives one group's."""
        if not found:
            return []
        if not self._thread.is_alive():
            raise RuntimeError("the face batcher is closed")
        future: Future[Any] = Future()
        self._queue.put((found, future))
        return future.result()

    def close(self) -> None:
        """Stops the network thread once the waiting requests are answered."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while (first := self._queue.get()) is not _STOP:
            pending = [first]
            size = len(first[0])
            stop = False
            while size < self.max_faces:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                pending.append(item)
                size += len(item[0])
            try:
                groups = self.predictor.predict_groups([found for found, _ in pending])
            except Exception as error:  # every waiting request gets the error, none is left hanging
                for _, future in pending:
                    future.set_exception(error)
            else:
                for (_, future), group in zip(pending, groups, strict=True):
                    future.set_result(group)
            self.calls += 1
            self.requests += len(pending)
            if stop:
                return
