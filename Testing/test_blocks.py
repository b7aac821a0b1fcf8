"""The one block runner: every item once, progress, cancel and errors, alike for both fits."""

import threading
import time
import tracemalloc
import warnings

import numpy as np
import pytest

from IronMapping.blocks import block_slices, block_voxels, run_blocks
from IronMapping.errors import FitCancelled
from IronMapping.fatwater import fit_fatwater
from IronMapping.phantom import noncentral_chi
from IronMapping.relaxometry import Status, fit


def test_block_slices_cover_every_item_once():
    for n, size in [(0, 5), (1, 5), (10, 5), (11, 5), (7, 100)]:
        slices = block_slices(n, size)
        covered = np.concatenate([np.arange(n)[s] for s in slices]) if slices else np.empty(0)
        np.testing.assert_array_equal(covered, np.arange(n))
        assert all(s.stop - s.start <= size for s in slices)


@pytest.mark.parametrize("workers", [1, 2, 3, None])
def test_every_item_done_once_and_progress_rises_to_the_end(workers):
    counts = np.zeros(1003, int)
    lock = threading.Lock()
    seen = []

    def work(sl):
        with lock:
            counts[sl] += 1

    run_blocks(work, counts.size, 100, workers=workers, progress=seen.append, start=0.2, share=0.5)
    assert np.all(counts == 1)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(0.7) and seen[0] > 0.2
    assert len(seen) <= 11


def test_nothing_to_do_reports_nothing():
    seen = []
    run_blocks(lambda sl: pytest.fail("no block"), 0, 10, progress=seen.append, cancel=lambda: True)
    assert seen == []


@pytest.mark.parametrize("workers", [1, 2])
def test_cancel_starts_no_further_block_and_waits_for_running_ones(workers):
    started, finished = [], []
    at_cancel = []

    def work(sl):
        started.append(sl.start)
        time.sleep(0.02)
        finished.append(sl.start)

    def cancel():
        if finished:
            at_cancel.append(len(started))
            return True
        return False

    with pytest.raises(FitCancelled, match="The test run was cancelled"):
        run_blocks(work, 100, 10, workers=workers, cancel=cancel, what="The test run")
    # no block starts once cancel() said so, and none is left running
    assert len(at_cancel) == 1 and len(started) == at_cancel[0] < 10
    assert sorted(started) == sorted(finished)


def test_cancel_before_the_first_block_does_no_work():
    with pytest.raises(FitCancelled):
        run_blocks(lambda sl: pytest.fail("no block may start"), 50, 10, workers=2, cancel=lambda: True)


@pytest.mark.parametrize("workers", [1, 2])
def test_an_error_in_a_block_propagates_and_stops_the_run(workers):
    started = []

    def work(sl):
        started.append(sl.start)
        if sl.start == 10:
            raise ZeroDivisionError("block 2")
        time.sleep(0.01)

    with pytest.raises(ZeroDivisionError, match="block 2"):
        run_blocks(work, 1000, 10, workers=workers)
    assert len(started) <= 2 + workers


def _decays(n, n_echoes=8, seed=0):
    rng = np.random.default_rng(seed)
    te = 1.2 * np.arange(1, n_echoes + 1)
    r2 = rng.uniform(30, 300, n)
    return noncentral_chi(1000 * np.exp(-np.outer(te / 1000, r2)), 10.0, 1, rng), te


def _fatwater(signal, te, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_fatwater(signal, te, 1.5, noise_sigma=10.0, chunk_size=block_voxels(signal.shape[0]),
                            **kwargs)


def _relaxometry(signal, te, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit(signal, te, method="nlls", mask=np.ones(signal.shape[1], bool), noise_sigma=10.0,
                   **kwargs)


FITS = {"relaxometry": (_relaxometry, "workers"), "fat-water": (_fatwater, "threads")}


@pytest.mark.parametrize("which", FITS)
@pytest.mark.parametrize("threads", [1, 2])
def test_both_fits_report_progress_the_same_way(which, threads):
    run, threads_name = FITS[which]
    signal, te = _decays(3 * block_voxels(8) + 5)
    seen = []
    run(signal, te, progress=seen.append, **{threads_name: threads})
    assert seen == sorted(seen) and seen[-1] == 1.0
    # after every block (relaxometry adds 0 first and 1 last); blocks finishing together on
    # two threads share one report
    inner = [p for p in seen if 0.0 < p < 1.0]
    assert len(inner) == 3 if threads == 1 else len(inner) >= 1


@pytest.mark.parametrize("which", FITS)
@pytest.mark.parametrize("threads", [1, 2])
def test_both_fits_cancel_the_same_way(which, threads):
    run, threads_name = FITS[which]
    signal, te = _decays(6 * block_voxels(8))
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) >= 2

    with pytest.raises(FitCancelled, match="cancelled; no maps were produced"):
        run(signal, te, cancel=cancel, **{threads_name: threads})
    # polled before the first block and honoured at the next poll: no more polls after it
    assert len(calls) == 2


def test_relaxometry_fit_temporaries_stay_small():
    """Python-traced peak of a whole fit (maps included) near the input array's size: the blocks'
    float64 temporaries are a few MiB per thread, not image-sized."""
    rng = np.random.default_rng(3)
    shape = (16, 8, 256, 256)
    te = 1.0 + 1.2 * np.arange(shape[0])
    r2 = rng.uniform(25, 800, shape[1:])
    signal = noncentral_chi(1000 * np.exp(-np.multiply.outer(te / 1000, r2)), 20.0, 1, rng).astype(np.float32)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fit(signal, te, noise_sigma=20.0, coils=1, workers=2)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert np.count_nonzero(result.status == Status.FITTED) > 0.9 * r2.size
    print(f"peak {peak / signal.nbytes:.2f} x the input")
    assert peak < 1.25 * signal.nbytes, f"peak {peak / 2**20:.0f} MiB for a {signal.nbytes / 2**20:.0f} MiB input"
