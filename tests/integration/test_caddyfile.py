"""The user's Caddyfile as users write it: zdd's reload behaves exactly as `caddy reload --config FILE`."""

import http.client
from pathlib import Path

import pytest

from tests.support.net import free_port, http_get

ONLY_DEBIAN_CADDY = pytest.mark.parametrize("caddy_binary", ["caddy2.6"], indirect=True)


@pytest.mark.parametrize("caddy_binary", ["caddy2.6", "caddy-current"], indirect=True)
def test_relative_imports_survive_zdds_reload(stack):
    # A relative glob import (another site), a relative file import (a snippet), and zdd's own snippet
    # beside them; Caddy runs in / as Debian's unit runs it. The first deploy makes zdd reload Caddy (the
    # snippet goes from "no version yet" to the app's upstream): nothing else may change.
    other_port = free_port()
    (stack.workdir / "sites").mkdir()
    (stack.workdir / "sites" / "other.caddy").write_text(f':{other_port} {{\n\trespond "the other site"\n}}\n')
    (stack.workdir / "common.caddy").write_text('(common) {\n\theader X-Common "from a relative import"\n}\n')
    text = stack.caddy.caddyfile.read_text()
    text = text.replace("\n:", "\nimport common.caddy\nimport sites/*\n\n:", 1)
    text = text.replace('header X-Site "user-owned"', 'header X-Site "user-owned"\n\timport common')
    stack.caddy.caddyfile.write_text(text)
    stack.caddy.cwd = Path("/")
    stack.start()
    assert http_get(other_port) == (200, "the other site")
    assert stack.deploy("v1").returncode == 0
    assert '"load complete"' in stack.caddy.log.read_text()  # zdd did reload Caddy
    stack.caddy.wait_serving("v1")
    assert http_get(other_port) == (200, "the other site")  # the glob still matched
    conn = http.client.HTTPConnection("127.0.0.1", stack.caddy.port, timeout=5)
    conn.request("GET", "/")
    response = conn.getresponse()
    assert response.getheader("X-Common") == "from a relative import" and response.read().strip() == b"v1"


@ONLY_DEBIAN_CADDY
def test_a_caddyfile_caddy_cannot_adapt_fails_the_first_deploy_with_caddys_reason(stack):
    stack.start()
    stack.caddy.caddyfile.write_text(stack.caddy.caddyfile.read_text() + "\nimport missing-file.caddy\n")
    result = stack.deploy("v1")
    assert result.returncode == 1
    assert "cannot be loaded" in result.stderr and "missing-file.caddy" in result.stderr, result.stderr
    assert stack.agent.process.poll() is None  # the agent stays up
