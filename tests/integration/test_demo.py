"""The README's demo command, run as the README says: it sets up what it needs, deploys v1 then v2 under load."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_demo_command_deploys_under_load_and_fails_no_request():
    demo = subprocess.run([ROOT / "bench" / "run-demo"], capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "FAILED REQUESTS: 0" in demo.stdout
    assert "last deploy v2: succeeded" in demo.stdout and "the site now answers: (200, 'v2')" in demo.stdout
