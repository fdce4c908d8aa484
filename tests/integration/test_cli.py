"""The `zdd` command's exit codes (README's table) and `zdd check`, against a real Caddy and zdd dns."""

import signal
import subprocess
import sys
import tomllib

import pytest
import tomli_w

from tests.support.net import free_port

ONLY_DEBIAN_CADDY = pytest.mark.parametrize("caddy_binary", ["caddy2.6"], indirect=True)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_LIVE, EXIT_TIMEOUT = 0, 1, 2, 3, 4


def edit_config(stack, **caddy_keys) -> None:
    data = tomllib.loads(stack.config_path.read_text())
    data["caddy"].update(caddy_keys)
    stack.config_path.write_text(tomli_w.dumps(data))


@ONLY_DEBIAN_CADDY
def test_check_passes_then_names_each_problem_with_exit_2(stack):
    stack.start()
    ok = stack.agent.cli("check")
    assert ok.returncode == EXIT_OK and "ok (1 app: web)" in ok.stdout, ok.stderr

    good = stack.caddy.caddyfile.read_text()
    stack.caddy.caddyfile.write_text(good.replace(f"import {stack.snippet}", ""))
    result = stack.agent.cli("check")
    assert result.returncode == EXIT_USAGE
    assert f"does not import app web's upstream; add `import {stack.snippet}`" in result.stderr
    stack.caddy.caddyfile.write_text(good)

    edit_config(stack, admin=f"127.0.0.1:{free_port()}")  # nothing listens there
    result = stack.agent.cli("check")
    assert result.returncode == EXIT_USAGE and "caddy.admin: Caddy admin API at 127.0.0.1:" in result.stderr
    assert "unreachable" in result.stderr

    edit_config(stack, admin=stack.caddy.admin, resolver=f"127.0.0.1:{free_port()}")
    result = stack.agent.cli("check")
    assert result.returncode == EXIT_USAGE and "caddy.resolver: zdd dns does not answer" in result.stderr


@ONLY_DEBIAN_CADDY
def test_exit_codes_of_deploy_status_and_bad_input(stack, tmp_path):
    # 3: status with nothing live; 4: --wait with no agent to do it; 2: a foreign image; 0 and 1: a deploy
    # that lands and one that fails its health gate.
    assert stack.agent.cli("status").returncode == EXIT_NOT_LIVE
    stack.agent.resolver.start()
    waited = stack.agent.cli("deploy", "v1", "--wait", "--timeout", "1")
    assert waited.returncode == EXIT_TIMEOUT and "not finished within 1s (is `zdd run` running?)" in waited.stderr
    stack.start()
    assert stack.deploy("v1").returncode == EXIT_OK  # the request dropped before the agent ran is taken now
    assert stack.agent.cli("status").returncode == EXIT_OK
    foreign = stack.agent.cli("deploy", "evil.example.com/x:v1")
    assert foreign.returncode == EXIT_USAGE and "is not the repository of any configured app" in foreign.stderr
    stack.configure(start_timeout="2s")
    stack.agent.signal(signal.SIGHUP)
    failed = stack.deploy("sick")
    assert failed.returncode == EXIT_FAILED and "did not pass" in failed.stderr
    assert stack.agent.cli("status").returncode == EXIT_NOT_LIVE  # the last deploy failed
    missing = subprocess.run(
        [sys.executable, "-m", "zdd", "--config", str(tmp_path / "nope.toml"), "status"], capture_output=True, text=True
    )
    assert missing.returncode == EXIT_USAGE
    assert missing.stderr.strip() == f"zdd: {tmp_path / 'nope.toml'}: no such config file"
