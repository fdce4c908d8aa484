"""The main loop's sleep: woken by another thread or by a signal, with no lock in the signal path."""

import os
import signal
import threading
import time

from zdd.waker import Waker


def test_wait_times_out_then_is_woken_by_another_thread():
    waker = Waker()
    try:
        assert waker.wait(0.05) is False
        threading.Timer(0.1, waker.wake).start()
        started = time.monotonic()
        assert waker.wait(5) is True and time.monotonic() - started < 2
        assert waker.wait(0.01) is False  # drained: one wake-up, one return
    finally:
        waker.close()


def test_a_signal_wakes_the_loop_through_the_pipe():
    waker = Waker()
    got = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))  # flags only
    try:
        waker.wake_on_signals()
        threading.Timer(0.1, os.kill, args=(os.getpid(), signal.SIGUSR1)).start()
        assert waker.wait(5) is True
        assert got == [signal.SIGUSR1]
    finally:
        waker.close()
        signal.signal(signal.SIGUSR1, previous)


def test_many_wakes_never_block_the_waker():
    waker = Waker()
    try:
        for _ in range(200_000):  # more than the pipe holds
            waker.wake()
        assert waker.wait(0) is True
    finally:
        waker.close()
