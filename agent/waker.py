"""How the main loop sleeps until something happens, safely for signal handlers.

A signal handler runs on the main thread between two bytecodes, possibly while that thread holds the
lock inside a threading.Event (in wait(), set() or clear()): calling Event.set() from the handler can
then deadlock until the watchdog kills the agent. So the loop sleeps in select() on a pipe instead; the
kernel writes the signal's number there (signal.set_wakeup_fd) and other threads (inotify) write a byte.
Nothing here takes a lock.
"""

import os
import select
import signal


class Waker:
    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._on_signals = False

    def wake(self) -> None:
        """From any thread: the loop's wait() returns now."""
        try:
            os.write(self._write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop is woken already

    def wake_on_signals(self) -> None:
        """The kernel-level signal handler writes to the pipe (main thread only)."""
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._on_signals = True

    def wait(self, timeout: float) -> bool:
        """Sleep until woken or `timeout` seconds pass; True when woken. Drains the pipe."""
        readable, _, _ = select.select([self._read], [], [], max(0.0, timeout))
        if not readable:
            return False
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        if self._on_signals:
            signal.set_wakeup_fd(-1)
        os.close(self._read)
        os.close(self._write)
