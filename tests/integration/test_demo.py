"""The README's demo command. `bench/run-demo` is `tests/setup-host` (which tests/run has just run) and then
`python -m bench.demo`: this runs the latter as the command does, and checks what it promises."""

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_demo_deploys_under_load_and_fails_no_request():
    # A session of its own: on a timeout the demo's Caddy, zdd run and zdd dns go with it.
    demo = subprocess.Popen(
        [sys.executable, "-m", "bench.demo"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = demo.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGKILL)
        out, err = demo.communicate()
    assert demo.returncode == 0, out[-3000:] + err[-3000:]
    assert "FAILED REQUESTS: 0" in out
    assert "last deploy v2: succeeded" in out and "the site now answers: (200, 'v2')" in out
