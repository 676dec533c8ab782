"""The search spread over processes: each worker takes one archive at a time, inflates and
searches it, and sends what it found back in batches.

Processes, not threads: inflating and matching hold the GIL for most of their time (zlib
and `re` release it only for large calls), so two threads on two cores run little faster
than one. A worker reads its archive itself (a local file, or an object streamed from the
bucket) so archive bytes never cross a pipe; only findings do, at most `BATCH` lines at a
time, through a bounded queue: a parent that prints slowly slows the workers, and memory
stays bounded whatever an archive holds.

With ``workers=1`` the search runs in this process (tests, and `-j 1`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.context import ForkContext, ForkServerContext
from typing import Any

from collector.config.select import Glob
from collector.grep.layout import Found
from collector.grep.search import Matcher, Query, Sink, Walk
from collector.grep.unpack import CHUNK, Budget, Damaged, Decompressor, Stream, best_decompressobj

BATCH = 1000  # lines per message from a worker
BUDGET_FLOOR = 2 * 1024**3  # inflated bytes any archive may reach (a 1 GiB line must fit)
BUDGET_RATIO = 200  # ... and per byte of the archive, for archives larger than the floor / this

# What a worker sends: ("lines", index, [(member, number, text, length), ...]),
# ("count", index, n), ("warn", index, message), ("done", index, searched), ("exit",).
Message = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Finding:
    member: str
    number: int
    text: bytes
    length: int


def budget_for(size: int) -> Budget:
    return Budget(max(BUDGET_FLOOR, BUDGET_RATIO * size))


class _Batching(Sink):
    def __init__(self, query: Query, index: int, send: Callable[[Message], None]) -> None:
        super().__init__(query)
        self.index = index
        self.send = send
        self.lines: list[tuple[str, int, bytes, int]] = []

    def line(self, member: str, number: int, text: bytes, length: int) -> None:
        self.lines.append((member, number, text, length))
        if len(self.lines) >= BATCH:
            self.flush()

    def warn(self, message: str) -> None:
        self.flush()
        self.send(("warn", self.index, message))

    def flush(self) -> None:
        if self.lines:
            self.send(("lines", self.index, self.lines))
            self.lines = []


class _Searcher:
    """One process's means: the compiled query, the inflater, a bucket client if needed."""

    def __init__(self, query: Query, send: Callable[[Message], None]) -> None:
        self.query = query
        self.matcher = Matcher(query)
        self.glob = Glob(query.member) if query.member is not None else None
        self.inflater: Decompressor = best_decompressobj()
        self.send = send
        self._bucket: _Bucket | None = None

    def search(self, index: int, found: Found) -> None:
        sink = _Batching(self.query, index, self.send)
        searched = True
        try:
            stream, size, close = self._open(found)
        except (OSError, Damaged) as exc:
            sink.warn(f"cannot be read: {getattr(exc, 'strerror', None) or exc}")
            self.send(("done", index, False))
            return
        try:
            walk = Walk(self.query, self.matcher, sink, budget_for(size), self.inflater, self.glob, _base(found.where))
            searched = walk.search(stream)
        except OSError as exc:
            sink.warn(f"cannot be read: {exc.strerror or exc}")
            searched = False
        except Exception as exc:  # noqa: BLE001 - a bug fails this archive, not the search
            sink.warn(f"not searched: a bug in collector ({type(exc).__name__}: {exc}); please report it")
            searched = False
        finally:
            close()
        sink.flush()
        if self.query.mode != "lines":
            self.send(("count", index, sink.selected))
        self.send(("done", index, searched))

    def _open(self, found: Found) -> tuple[Stream, int, Callable[[], None]]:
        if found.path is not None:
            file = open(found.path, "rb", buffering=0)  # noqa: SIM115 - closed by the caller
            return file, os.fstat(file.fileno()).st_size, file.close
        if self._bucket is None:
            self._bucket = _Bucket(found)
        return self._bucket.open(found.name)

    def close(self) -> None:
        if self._bucket is not None:
            self._bucket.close()


def _base(where: str) -> str:
    return where.rsplit("/", 1)[-1]


class _Bucket:
    """A bucket client for a worker: an event loop on a thread of its own, and objects read
    through it as blocking streams (a queue of at most `AHEAD` chunks in between)."""

    AHEAD = 4

    def __init__(self, found: Found) -> None:
        assert found.location is not None
        self.location = found.location
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="grep-s3", daemon=True)
        self.thread.start()
        self._ready = threading.Event()
        self._closing: asyncio.Event | None = None
        # The destination is entered and left by one task, as its task group requires.
        self._holder = asyncio.run_coroutine_threadsafe(self._hold(), self.loop)
        while not self._ready.wait(0.05):
            if self._holder.done():
                self._holder.result()  # raises what kept it from opening

    async def _hold(self) -> None:
        self._closing = asyncio.Event()
        async with self.location.open() as destination:
            self.destination = destination
            self._ready.set()
            await self._closing.wait()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def open(self, name: str) -> tuple[Stream, int, Callable[[], None]]:
        from collector.destinations.s3errors import translating
        from collector.errors import StorageError

        destination = self.destination
        key = destination.key(name)
        try:
            with translating(f"read {destination.where(key)}"):
                answer = self._call(destination.client.get_object(Bucket=destination.bucket, Key=key))
        except StorageError as exc:
            raise Damaged(str(exc)) from None
        chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(self.AHEAD)
        stop = threading.Event()

        async def pump() -> None:
            try:
                async with answer["Body"] as body:
                    while not stop.is_set():
                        chunk = await body.read(CHUNK)
                        await asyncio.to_thread(chunks.put, chunk or None)
                        if not chunk:
                            return
            except Exception as exc:  # noqa: BLE001 - handed to the reader, which reports it
                await asyncio.to_thread(chunks.put, exc)

        pumping = asyncio.run_coroutine_threadsafe(pump(), self.loop)
        stream = _Chunks(chunks)

        def close() -> None:
            stop.set()
            _drain_until(pumping, chunks)

        return stream, int(answer.get("ContentLength") or 0), close

    def close(self) -> None:
        if self._closing is not None:
            self.loop.call_soon_threadsafe(self._closing.set)
        self._holder.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


def _drain_until(pumping: Future[None], chunks: queue.Queue[bytes | BaseException | None]) -> None:
    while not pumping.done():
        try:
            chunks.get(timeout=0.05)
        except queue.Empty:
            pass


class _Chunks:
    """A blocking stream over the queue a pump fills; an error in the pump ends it as damage."""

    def __init__(self, chunks: queue.Queue[bytes | BaseException | None]) -> None:
        self.chunks = chunks
        self.buffer = b""
        self.ended = False

    def read(self, n: int) -> bytes:
        while not self.buffer and not self.ended:
            item = self.chunks.get()
            if item is None:
                self.ended = True
            elif isinstance(item, BaseException):
                self.ended = True
                raise Damaged(f"the object could not be read to its end ({item})")
            else:
                self.buffer = item
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out


def _worker(query: Query, found: list[Found], tasks: Any, results: Any) -> None:
    searcher = _Searcher(query, results.put)
    try:
        while True:
            index = tasks.get()
            if index is None:
                break
            searcher.search(index, found[index])
    finally:
        searcher.close()
        results.put(("exit",))


def search_all(found: list[Found], query: Query, workers: int) -> Generator[Message, None, None]:
    """Every message of every archive's search, as the workers send them."""
    if workers <= 1 or len(found) <= 1:
        yield from _in_process(found, query)
        return
    # fork where no thread runs yet (the command line): workers start at once, and their CPU
    # time is this process's children's (a benchmark reads it); forkserver otherwise (tests).
    context: ForkContext | ForkServerContext = (
        multiprocessing.get_context("fork")
        if threading.active_count() == 1
        else multiprocessing.get_context("forkserver")
    )
    tasks = context.SimpleQueue()
    results = context.Queue(maxsize=64)
    count = min(workers, len(found))
    processes = [
        context.Process(target=_worker, args=(query, found, tasks, results), name=f"grep-{n}", daemon=True)
        for n in range(count)
    ]
    for process in processes:
        process.start()

    def feed() -> None:
        # From a thread: the task pipe fills long before thousands of archives are handed out.
        for index in range(len(found)):
            tasks.put(index)
        for _ in processes:
            tasks.put(None)

    feeder = threading.Thread(target=feed, name="grep-feeder", daemon=True)
    feeder.start()
    try:
        running = count
        while running:
            try:
                message = results.get(timeout=1)
            except queue.Empty:
                if not any(process.is_alive() for process in processes):
                    raise RuntimeError("every grep worker ended without finishing") from None
                continue
            if message[0] == "exit":
                running -= 1
            else:
                yield message
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(5)


def _in_process(found: Iterable[Found], query: Query) -> Iterator[Message]:
    sent: list[Message] = []
    searcher = _Searcher(query, sent.append)
    try:
        for index, archive in enumerate(found):
            searcher.search(index, archive)
            yield from sent
            sent.clear()
    finally:
        searcher.close()
