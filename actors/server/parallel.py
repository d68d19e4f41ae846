"""Running an actor's independent blocking calls (HTTP to executors) side by side.

An actor handles one message at a time; when it has several jobs to send or several results to
fetch, waiting for each answer in turn makes the slowest hop of the whole system the sum of them.
`CallPool.each` runs the calls on a few threads and hands every outcome back, in order, to the
actor's own thread, which alone touches the actor's state. `CallPool.start` runs one call without
waiting for it: its outcome is handed to a callback on the pool's thread (the actor collects it
from a queue), so a slow call holds up neither the actor nor the calls started after it.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class CallPool:
    def __init__(self, workers: int, name: str):
        self.workers = workers
        self.name = name
        self._pool: ThreadPoolExecutor | None = None

    def each(self, call: Callable[[Item], Result], items: Sequence[Item]) -> list[tuple[Item, Result | None, Exception | None]]:
        """(item, result, None) or (item, None, exception) for every item, in the order given."""
        if len(items) <= 1:  # no thread hop for the common single call
            return [_outcome(call, item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)
        return list(self._pool.map(lambda item: _outcome(call, item), items))

    def start(self, call: Callable[[Item], Result],
              item: Item, done: Callable[[tuple[Item, Result | None, Exception | None]], None]) -> None:
        """Run `call(item)` on a pool thread, which then calls `done` with what `each` would give."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)
        self._pool.submit(lambda: done(_outcome(call, item)))


def _outcome(call, item):
    try:
        return item, call(item), None
    except Exception as exc:  # noqa: BLE001 — handed back to the actor, which decides
        return item, None, exc
