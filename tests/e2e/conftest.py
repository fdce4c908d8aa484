"""Shared by the end-to-end modules. Each module boots its own machine (module-scoped fixture) and shuts
it down at the module's end, before the next module's machine boots (Machine.boot checks)."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def deb(tmp_path_factory) -> Path:
    """The .deb, built once per session the Debian way (packaging/build-deb), lintian-clean."""
    out = tmp_path_factory.mktemp("deb")
    build = subprocess.run([str(ROOT / "packaging" / "build-deb"), str(out)], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    assert "lintian: no errors, no warnings" in build.stdout
    (path,) = out.glob("zdd_*_all.deb")
    return path
