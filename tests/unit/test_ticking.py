"""Blocking calls keep the agent ticking, and a call that never returns is given up, not waited for."""

import threading
import time

import pytest

import zdd.ticking as ticking_module
from zdd.config import HealthCheck
from zdd.errors import TemporaryError
from zdd.ticking import Ticking, TickingProber, TickingRuntime


class SlowRuntime:
    """Blocks like a hung dockerd or a stalled registry, until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def stop(self, container_id: str, timeout: float) -> None:
        self.release.wait(timeout + 5)

    def exit_reason(self, container_id: str) -> str | None:
        self.release.wait(30)
        return None

    def pull(self, ref: str, progress, stall_timeout: float) -> None:
        for n in range(3):
            time.sleep(0.05)
            progress(100 * (n + 1), 300)
        self.release.wait(30)  # then the registry stops sending


@pytest.fixture
def ticks():
    return []


def test_a_slow_call_is_ticked_through(ticks):
    runtime = SlowRuntime()
    threading.Timer(0.5, runtime.release.set).start()
    TickingRuntime(runtime, Ticking(lambda: ticks.append(time.monotonic()))).stop("c1", 1.0)
    assert len(ticks) >= 2 and max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) < 0.5


def test_a_call_that_takes_longer_than_it_may_is_given_up(ticks, monkeypatch):
    monkeypatch.setattr(ticking_module, "CALL_LIMIT", 0.3)
    runtime = SlowRuntime()
    with pytest.raises(TemporaryError, match="exit_reason: Docker did not answer within 0s"):
        TickingRuntime(runtime, Ticking(lambda: ticks.append(1))).exit_reason("c1")
    runtime.release.set()


def test_a_pull_is_given_up_when_its_progress_stalls_not_while_it_progresses(ticks):
    runtime = SlowRuntime()
    progress, caller = [], threading.get_ident()
    started = time.monotonic()

    def told(done: int, total: int) -> None:
        progress.append((done, total, threading.get_ident()))

    with pytest.raises(TemporaryError, match="no progress for 0.4s"):
        TickingRuntime(runtime, Ticking(lambda: ticks.append(1))).pull("r/web:v2", told, 0.4)
    assert time.monotonic() - started >= 0.55  # 3 x 50 ms of progress, then 0.4 s without
    # Told on the waiting (caller's) thread, never the pull's, at its ticks: each figure once, the last always.
    assert progress and progress[-1] == (300, 300, caller) and {p[2] for p in progress} == {caller}
    assert len(set(progress)) == len(progress)
    runtime.release.set()


def test_a_pull_is_abandoned_when_zdd_is_asked_to_stop(ticks):
    runtime = SlowRuntime()
    stopping = threading.Event()
    threading.Timer(0.3, stopping.set).start()
    with pytest.raises(TemporaryError, match="zdd is stopping"):
        TickingRuntime(runtime, Ticking(lambda: None, stopping=stopping.is_set)).pull("r/web:v2", lambda *_: None, 60)
    runtime.release.set()


def test_errors_of_the_call_reach_the_caller():
    class Broken:
        def remove(self, container_id: str) -> None:
            raise TemporaryError("Docker engine unavailable")

    with pytest.raises(TemporaryError, match="unavailable"):
        TickingRuntime(Broken(), Ticking(lambda: None)).remove("c1")


def test_a_long_health_probe_ticks(ticks):
    class SlowProber:
        def check(self, address: str, health: HealthCheck) -> str | None:
            time.sleep(0.5)
            return "HTTP 500"

    prober = TickingProber(SlowProber(), Ticking(lambda: ticks.append(1)))
    assert prober.check("10.0.0.2:8080", HealthCheck("/up", 10.0)) == "HTTP 500" and len(ticks) >= 2
