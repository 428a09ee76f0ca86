"""A generic prefetch thread: an iterator run a bounded number of items ahead of its consumer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Empty, Full, Queue
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


def prefetched(batches: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Run ``batches`` in a thread, ``depth`` batches ahead (bounded memory).

    Parsing is Python; loading waits on PostgreSQL, which releases the GIL: with the parser a
    batch ahead, the client parses while the server inserts, on the machine's two cores. An
    exception in the parser is raised here, in the consumer; a consumer that stops early stops
    the parser.
    """
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        queue.put((item, None), timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer)
            queue.put((_DONE, exc))

    worker = threading.Thread(target=produce, name="parse-window", daemon=True)
    worker.start()
    try:
        while True:
            item, error = queue.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                queue.get(timeout=0.1)
            except Empty:
                pass
        worker.join()
