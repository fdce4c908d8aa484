"""The unit tier reads no setting from the environment it happens to run in."""

import pytest


@pytest.fixture(autouse=True)
def no_zdd_environment(monkeypatch):
    for name in ("ZDD_CONFIG", "ZDD_STATE_DIR", "DOCKER_HOST"):
        monkeypatch.delenv(name, raising=False)
