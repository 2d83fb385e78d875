"""`read_ahead`: iterate in a background thread a few items ahead of the consumer (the reads release the GIL)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


_END = object()


def read_ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead of the consumer (0: inline).

    Order is unchanged; an exception in the thread is raised in the consumer; when the consumer stops early,
    the thread is stopped and ``items`` closed (so its ``finally`` blocks run).
    """
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                q.put((item, None))
                if stop.is_set():
                    return
            q.put((_END, None))
        except BaseException as e:  # handed to the consumer, which raises it
            q.put((_END, e))

    thread = threading.Thread(target=produce, name="smec-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                q.get(timeout=0.01)
        close = getattr(items, "close", None)
        if close is not None:
            close()
