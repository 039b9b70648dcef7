"""Engine workers: calls and streams across the process boundary, cancellation, crashes, restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest

from providers.base import ErrorKind, ProviderError
from providers.local.workers.supervisor import RestartPolicy, WorkerSupervisor
from tests.providers.local.workers.support import alive, echo_worker, wait_gone


@pytest.fixture
def worker() -> Iterator[WorkerSupervisor]:
    supervisor = echo_worker()
    yield supervisor
    supervisor.stop()


async def test_calls_run_in_another_process(worker: WorkerSupervisor) -> None:
    assert await worker.call("echo", {"a": [1, 2]}) == {"a": [1, 2]}
    pid = await worker.call("pid")
    assert pid != os.getpid() and pid == worker.process.pid
    assert worker.stats.starts == 1 and worker.stats.up == 1


async def test_engine_errors_keep_their_kind(worker: WorkerSupervisor) -> None:
    with pytest.raises(ProviderError) as refused:
        await worker.call("fail", "provider")
    assert refused.value.kind is ErrorKind.BAD_REQUEST and refused.value.code == "InvalidInput"
    with pytest.raises(ProviderError) as bug:
        await worker.call("fail", "bug")
    assert bug.value.kind is ErrorKind.UNAVAILABLE and "an engine bug" in bug.value.message
    with pytest.raises(ProviderError, match="no method"):
        await worker.call("__init__")
    assert await worker.call("echo", 1) == 1  # the worker lived through all three


async def test_stream_items_arrive_as_they_are_produced(worker: WorkerSupervisor) -> None:
    start = time.monotonic()
    arrivals = []
    async for item in worker.stream("count", 4, 0.2):
        arrivals.append((item, time.monotonic() - start))
    assert [i for i, _ in arrivals] == [0, 1, 2, 3]
    # the first item comes after one step, long before the last (a buffered stream would deliver
    # all four together); relative, so a loaded machine's scheduling delay does not matter
    assert arrivals[-1][1] >= 0.8 and arrivals[-1][1] - arrivals[0][1] >= 0.45


async def test_cancelled_call_stops_in_the_worker_and_releases_only_then(worker: WorkerSupervisor) -> None:
    ended = asyncio.Event()
    task = asyncio.create_task(worker.call("sleep", 30, on_end=ended.set))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(ended.wait(), 2)  # the worker acknowledged the cancel
    assert worker.stats.crashes == 0 and await worker.call("echo", "still here") == "still here"


async def test_closing_a_stream_early_stops_the_producer(worker: WorkerSupervisor) -> None:
    ended = asyncio.Event()
    stream = worker.stream("count", 1000, 0.01, on_end=ended.set)
    async for item in stream:
        if item == 2:
            break
    await stream.aclose()
    await asyncio.wait_for(ended.wait(), 2)
    assert worker.process.busy == 0


async def test_a_call_that_ignores_cancel_gets_its_worker_killed(worker: WorkerSupervisor) -> None:
    first_pid = await worker.call("pid")
    ended = asyncio.Event()
    task = asyncio.create_task(worker.call("stuck", 60, on_end=ended.set))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(ended.wait(), 5)  # killed after the 0.5 s grace
    assert wait_gone(first_pid)
    assert worker.stats.crashes == 1
    assert await worker.call("pid") != first_pid  # a fresh worker serves the next call


@pytest.mark.parametrize("how", ["sigkill", "segv", "abort"])
async def test_a_dying_worker_fails_only_its_calls_and_is_restarted(
    worker: WorkerSupervisor, how: str
) -> None:
    pid = await worker.call("pid")
    running = asyncio.create_task(worker.call("sleep", 30))
    await asyncio.sleep(0.2)
    if how == "sigkill":
        os.kill(pid, signal.SIGKILL)
        dying = None
    else:
        dying = asyncio.create_task(worker.call("crash", how))
    with pytest.raises(ProviderError) as err:
        await asyncio.wait_for(running, 10)
    assert err.value.kind is ErrorKind.UNAVAILABLE and err.value.code == "WorkerCrashed"
    expected = {"sigkill": "SIGKILL", "segv": "SIGSEGV", "abort": "SIGABRT"}[how]
    assert expected in err.value.message
    if dying is not None:
        with pytest.raises(ProviderError):
            await dying
    assert worker.stats.crashes == 1
    assert await worker.call("echo", "after") == "after"
    assert worker.stats.restarts == 1 and worker.process.pid != pid
    healthy, detail = worker.health()
    assert healthy and "crashed 1 times" in detail


async def test_repeated_crashes_back_off_and_mark_the_model_unhealthy() -> None:
    worker = echo_worker(
        RestartPolicy(backoff_initial_s=5, crash_window_s=60, max_crashes=3, cancel_grace_s=0.5)
    )
    try:
        for _ in range(2):
            with pytest.raises(ProviderError):
                await worker.call("crash", "segv")
        # the second crash in the window waits for the back-off before the next start
        with pytest.raises(ProviderError) as waiting:
            await worker.call("echo", 1)
        assert waiting.value.code == "WorkerRestarting" and waiting.value.retry_after > 3
        assert worker.health()[0] is True
        worker._not_before = 0  # skip the 5 s wait
        with pytest.raises(ProviderError):
            await worker.call("crash", "segv")
        healthy, detail = worker.health()
        assert not healthy and "unhealthy" in detail and worker.stats.unhealthy
        assert worker.stats.crashes == 3
    finally:
        worker.stop()


async def test_load_errors_are_reported_and_crashes_while_loading_counted() -> None:
    refused = echo_worker(fail_load=True)
    with pytest.raises(ProviderError, match="asked to fail") as err:
        await refused.call("echo", 1)
    assert err.value.code == "ModelUnavailable" and refused.stats.crashes == 0
    crashing = echo_worker(crash_load=True)
    with pytest.raises(ProviderError, match="SIGSEGV while loading") as err:
        await crashing.call("echo", 1)
    assert err.value.code == "WorkerCrashed" and crashing.stats.crashes == 1
    refused.stop()
    crashing.stop()


async def test_stop_ends_the_process_and_refuses_new_calls(worker: WorkerSupervisor) -> None:
    pid = await worker.call("pid")
    await asyncio.to_thread(worker.stop)
    assert wait_gone(pid, 5) and worker.stats.up == 0 and worker.stats.crashes == 0
    with pytest.raises(ProviderError, match="unloaded"):
        await worker.call("echo", 1)


async def test_parallel_calls_share_one_worker(worker: WorkerSupervisor) -> None:
    spans = await asyncio.gather(*(worker.call("span", 0.5) for _ in range(2)))  # concurrency 2
    (start_a, end_a), (start_b, end_b) = spans
    assert max(start_a, start_b) < min(end_a, end_b)  # the two calls ran at the same time
    assert worker.stats.starts == 1


def test_worker_exits_when_the_gateway_dies(tmp_path) -> None:
    """A SIGKILLed parent cannot clean up: the worker must notice on its own (socket EOF)."""
    import subprocess
    import sys

    script = (
        "import asyncio, os, sys\n"
        "from tests.providers.local.workers.support import echo_worker\n"
        "w = echo_worker()\n"
        "print(asyncio.run(w.call('pid')), flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, cwd=os.getcwd())
    worker_pid = int(out.stdout.split()[0])
    assert out.returncode == -signal.SIGKILL
    assert wait_gone(worker_pid, 10), "the worker outlived its SIGKILLed parent"
    assert not alive(worker_pid)
