"""One worker thread per loaded model: a queue, batching of compatible requests, and time limits.

Why a thread per model and not a pool: the first generation on CPU re-lays the model's Linear weights out in
place (zoo.core.layers.lay_out_for_decoding) and every call keeps a KV cache of its own, so one model must
not run two generations at once. Each model therefore has one thread that takes requests in arrival
order; requests queued meanwhile whose options let them share a batch (`Member.batch_key`: text with the
same sampling options) run as one batched `generate` call. Different models run side by side.

Time limits: every request has a deadline (arrival + the server's `timeout_s`, queueing included). A
forward pre-hook on the model's token embedding (called once per decoding step) raises `Cancelled` when
every request of the running batch is past its deadline or was abandoned by its client (a closed
stream), so a long generation stops within one step and the thread takes the next request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from zoo.serve.errors import RequestError
from zoo.serve.options import Adapter

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside generation (from the model's forward hook) to stop a batch nobody waits for."""


@dataclass(eq=False)
class Job:
    opts: dict[str, Any]
    deadline: float  # time.monotonic()
    timeout_s: float
    key: Hashable | None = None
    on_text: Callable[[str], None] | None = None
    future: Future = field(default_factory=Future)
    abandoned: threading.Event = field(default_factory=threading.Event)

    def gone(self, now: float) -> bool:
        return self.abandoned.is_set() or now > self.deadline

    def timeout_error(self) -> RequestError:
        return RequestError(503, f"the request ran past the server's time limit of {self.timeout_s:g} s and was "
                                 "cancelled; ask for less (max_new_tokens, num_samples) or raise timeout_s",
                            field="timeout_s", accepted=f"requests that finish within {self.timeout_s:g} s")


class ModelWorker:
    """Runs the requests of one model, in order, batching where the adapter allows."""

    def __init__(self, name: str, adapter: Adapter, *, max_batch: int = 8, max_queue: int = 64) -> None:
        self.name, self.adapter, self.max_batch, self.max_queue = name, adapter, max_batch, max_queue
        self._queue: deque[Job] = deque()
        self._cv = threading.Condition()
        self._running: list[Job] = []
        self._closed = False
        self.batches = 0  # generate calls made (a batch of n requests counts once)
        self.requests = 0
        embeddings = [m for m in adapter.model.modules() if isinstance(m, nn.Embedding)]
        hooked = embeddings or [m for m in adapter.model.modules() if not list(m.children())]
        self._hooks = [m.register_forward_pre_hook(self._check) for m in hooked]
        self._thread = threading.Thread(target=self._loop, name=f"zoo-serve:{name}", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Future:
        job.key = self.adapter.batch_key(job.opts) if job.on_text is None else None  # a stream runs alone
        with self._cv:
            if self._closed:
                raise RequestError(503, "the server is shutting down", field=None)
            if len(self._queue) >= self.max_queue:
                raise RequestError(503, f"{self.name}: {len(self._queue)} requests are queued, the most this "
                                        "server accepts (max_queue); retry later", field=None)
            self._queue.append(job)
            self._cv.notify()
        return job.future

    def queued(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            for job in self._queue:
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(RequestError(503, "the server is shutting down", field=None))
            self._queue.clear()
            self._cv.notify_all()
        self._thread.join(timeout=30)
        for h in self._hooks:
            h.remove()

    # ---- the thread --------------------------------------------------------------------------
    def _check(self, *_: Any) -> None:
        running = self._running
        if running and all(j.gone(time.monotonic()) for j in running):
            raise Cancelled

    def _next_batch(self) -> list[Job]:
        job = self._queue.popleft()
        batch = [job]
        if job.key is not None:
            for other in list(self._queue):
                if len(batch) >= self.max_batch:
                    break
                if other.key == job.key:
                    self._queue.remove(other)
                    batch.append(other)
        return batch

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                batch = self._next_batch()
            now, live = time.monotonic(), []
            for job in batch:
                if not job.future.set_running_or_notify_cancel():  # its client went away while it queued
                    continue
                if job.gone(now):  # expired while queued
                    job.future.set_exception(job.timeout_error())
                else:
                    live.append(job)
            if live:
                self._run(live)

    def _run(self, batch: list[Job]) -> None:
        self._running = batch
        self.batches += 1  # counted before any answer goes out, so a client that got one sees its batch
        self.requests += len(batch)
        try:
            results = self.adapter.run([j.opts for j in batch], on_text=batch[0].on_text)
        except Cancelled:
            for job in batch:
                job.future.set_exception(job.timeout_error())
        except RequestError as e:
            for job in batch:
                job.future.set_exception(e)
        except (ValueError, TypeError) as e:  # a combination the member rejects that validation let through
            log.info("%s: request rejected by the member: %s", self.name, e)
            for job in batch:
                job.future.set_exception(RequestError(422, str(e), field=None))
        except Exception as e:  # noqa: BLE001 - the server stays up; the client gets JSON, the log the traceback
            log.exception("%s: generation failed", self.name)
            for job in batch:
                job.future.set_exception(RequestError(500, f"generation failed ({type(e).__name__}); see the "
                                                           "server log", field=None))
        else:
            for job, result in zip(batch, results):
                job.future.set_result(result)
        finally:
            self._running = []
