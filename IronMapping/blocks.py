"""The one block runner: work split into blocks of items, run on threads, with progress and cancel.

Both voxel fits use it (``relaxometry.fit`` and ``fatwater.fit_fatwater``), so they report
progress and honour a cancel request the same way:

* ``work(block)`` is called once per block, a ``slice`` of ``range(n_items)`` of at most
  ``block_size`` items, taken in order; with ``workers > 1`` that many threads each take the
  next block as soon as they are free (the kernels are numpy, which releases the GIL),
  otherwise the blocks run in the calling thread.
* ``cancel()`` is polled in the calling thread before the first block, after each block
  finishes and, while blocks run on threads, every 50 ms. Once it returns True no further block
  starts, the running blocks are waited for (none writes after the runner returns) and
  ``FitCancelled`` is raised: a request is honoured within one block.
* ``progress(fraction)`` is called in the calling thread after blocks finish, with the finished
  share of the items mapped onto ``[start, start + share]``; the values never decrease and the
  last is ``start + share``.
* An exception raised by ``work`` stops the run the same way (no new block, running ones
  waited for) and propagates unchanged.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from .errors import FitCancelled

#: Samples (echoes x voxels) per block of the relaxometry fit: large enough that numpy, not
#: Python, holds the time (the GIL is released inside numpy; smaller blocks lose to the GIL on
#: two threads), small enough that a block's float64 arrays (1.5 MiB each) stay near the cache
#: and the temporaries of a thread a few tens of MiB at most. Measured 2026-12-01 (12 echoes,
#: 2 threads, 1 M voxels): 16384 voxels a block 0.59-0.74 s, 32768 0.61-0.68 s, 8192 0.74-0.85 s;
#: with 16 echoes 32768-voxel blocks took 1.2-3 x the CPU time of 8192-12288.
BLOCK_SAMPLES = 196_608
#: How often (s) the calling thread polls ``cancel()`` while blocks run on threads.
POLL_S = 0.05


def default_workers() -> int:
    """Threads to use when none are given: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def block_voxels(n_echoes: int) -> int:
    """Voxels per block of the relaxometry fit.

    Parameters
    ----------
    n_echoes : int
        Echoes per voxel.

    Returns
    -------
    int
        ``BLOCK_SAMPLES // n_echoes`` (16384 for 12 echoes, 12288 for 16), at least 1024.
    """
    return max(1024, BLOCK_SAMPLES // max(1, int(n_echoes)))


def block_slices(n_items: int, block_size: int) -> list[slice]:
    """Consecutive slices covering ``range(n_items)``.

    Parameters
    ----------
    n_items : int
        Number of items.
    block_size : int
        Items per slice at most (the last may be shorter).

    Returns
    -------
    list of slice
    """
    block_size = max(1, int(block_size))
    return [slice(i, min(i + block_size, n_items)) for i in range(0, n_items, block_size)]


def run_blocks(work: Callable[[slice], object], n_items: int, block_size: int, *,
               workers: int | None = 1, progress: Callable[[float], None] | None = None,
               cancel: Callable[[], bool] | None = None, start: float = 0.0, share: float = 1.0,
               what: str = "The fit") -> None:
    """Call ``work(block)`` for blocks of ``range(n_items)`` (see the module docstring).

    Parameters
    ----------
    work : callable(slice)
        Does one block; its return value is ignored.
    n_items : int
        Number of items (voxels); 0 runs nothing and reports nothing.
    block_size : int
        Items per block (the last block may be shorter).
    workers : int or None
        Threads; None uses every core (:func:`default_workers`); never more than blocks.
    progress : callable(float), optional
        Called with the finished fraction, mapped onto ``[start, start + share]``.
    cancel : callable() -> bool, optional
        Returning True stops the run with ``FitCancelled``.
    start, share : float
        Where this run sits in the caller's overall progress (0..1).
    what : str
        Names the cancelled work in the ``FitCancelled`` message ("The fit", ...).

    Raises
    ------
    FitCancelled
        ``cancel()`` returned True.
    """
    blocks = block_slices(n_items, block_size)
    if not blocks:
        return
    workers = default_workers() if workers is None else max(1, int(workers))
    workers = min(workers, len(blocks))
    done = 0

    lock = threading.Lock()
    stop = threading.Event()

    def check():
        # under the lock that hands out blocks: once cancel() says so, no block starts
        with lock:
            if cancel is not None and cancel():
                stop.set()
                raise FitCancelled(f"{what} was cancelled; no maps were produced.")

    def report(finished):
        if progress is not None:
            progress(start + share * finished / n_items)

    if workers == 1:
        check()
        for block in blocks:
            work(block)
            done += block.stop - block.start
            report(done)
            check()
        return

    # Each thread takes the next block itself, so no worker waits for the calling thread; that
    # thread only reports progress and polls cancel, waking when a block finishes.
    queue = iter(blocks)
    wake = threading.Event()
    state = {"finished": 0, "exited": 0, "error": None}

    def worker():
        try:
            while True:
                with lock:
                    block = None if stop.is_set() else next(queue, None)
                if block is None:
                    return
                work(block)
                with lock:
                    state["finished"] += block.stop - block.start
                wake.set()
        except BaseException as error:  # handed to the calling thread
            stop.set()
            with lock:
                if state["error"] is None:
                    state["error"] = error
        finally:
            with lock:
                state["exited"] += 1
            wake.set()

    check()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in range(workers):
            pool.submit(worker)
        try:
            while True:
                wake.wait(POLL_S)
                wake.clear()
                with lock:
                    finished, exited, error = state["finished"], state["exited"], state["error"]
                if error is not None:
                    raise error
                if finished != done:
                    done = finished
                    report(done)
                check()
                if exited == workers:
                    return
        except BaseException:
            stop.set()  # no new block starts; leaving the pool waits for the running ones
            raise
