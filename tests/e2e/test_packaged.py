"""End to end: the built .deb, installed with apt in a booted Debian 12 (systemd-nspawn), used as an
operator would: `echo v2 > /var/lib/zdd/queue`, `systemctl status zdd`, `journalctl -u zdd`.

Docker: the machine uses this host's dockerd through the bound /run/docker.sock. apt installs docker.io
inside too (zdd depends on an engine), but its units are masked before the install so only the host's
engine ever runs; the machine's docker group gets the socket's gid so the zdd user may use it.
"""

import json
import time

import pytest

from tests.integration.test_deploy import wait_until
from tests.support import images
from tests.support.load import LoadClient
from tests.support.machine import Machine, booted_machine
from tests.support.net import http_get
from tests.support.webhook import WebhookReceiver

SITE_PORT, ADMIN_PORT = 18090, 2019  # Debian's `systemctl reload caddy` talks to the default admin address
CADDYFILE = f"""{{
	admin 127.0.0.1:{ADMIN_PORT}
	auto_https off
}}

:{SITE_PORT} {{
	header X-Site "the operator's own site block"
	import /var/lib/zdd-caddy/web.caddy
}}
"""
ZDD_TOML = f"""state_dir = "/var/lib/zdd"
network = "zdd-e2e"

[caddy]
admin = "127.0.0.1:{ADMIN_PORT}"
caddyfile = "/etc/caddy/Caddyfile"
snippet_dir = "/var/lib/zdd-caddy"

[apps.web]
image = "{images.REPOSITORY}"
port = 8080
health_path = "/up"
pull = "never"          # images are built on this server; no registry is reachable
drain_timeout = "20s"
stop_timeout = "5s"
probation = "2s"
"""


@pytest.fixture(scope="module")
def machine(tmp_path_factory, deb):
    with booted_machine(tmp_path_factory.mktemp("machine"), "zdd-e2e") as m:
        m.install_zdd(deb)  # the deb: tests/e2e/conftest.py
        m.write("/etc/zdd/zdd.toml", ZDD_TOML)
        # zdd first: it writes the snippet the Caddyfile imports, or Caddy would refuse to start.
        m.run("systemctl", "restart", "zdd")
        wait_until(lambda: (m.root / "var/lib/zdd-caddy/web.caddy").exists(), 30, "the snippet")
        # As an operator would: caddy came in as zdd's Recommends with its default site; point the
        # site at zdd's snippet (which exists now) and reload Caddy the Debian way.
        m.write("/etc/caddy/Caddyfile", CADDYFILE)
        m.run("systemctl", "reload", "caddy")
        yield m


def get(path: str = "/") -> tuple[int, str]:
    return http_get(SITE_PORT, path)


def serving(body: str) -> bool:
    try:
        return get() == (200, body)
    except OSError:
        return False


def main_pid(m: Machine) -> int:
    return int(m.run("systemctl", "show", "-p", "MainPID", "--value", "zdd").stdout.strip())


def test_installed_service_is_enabled_active_and_owns_its_files(machine):
    for unit in ("zdd.service", "zdd-dns.socket"):
        assert machine.run("systemctl", "is-enabled", unit).stdout.strip() == "enabled", unit
        assert machine.run("systemctl", "is-active", unit).stdout.strip() == "active", unit
    stat = machine.run("stat", "-c", "%a %U %G", "/var/lib/zdd", "/var/lib/zdd/queue").stdout.split("\n")
    assert stat[0] == "750 zdd zdd" and stat[1] == "660 zdd zdd"
    # For Caddy's own reloads; deploys do not depend on it (nspawn's /proc/sys is read-only: not checked).
    assert "net.ipv4.tcp_migrate_req = 1" in (machine.root / "usr/lib/sysctl.d/50-zdd.conf").read_text()
    assert "docker" in machine.run("id", "-nG", "zdd").stdout.split()
    wait_until(lambda: get() == (503, "web: no version deployed yet"), 30, "the placeholder snippet")


def test_echo_to_the_queue_deploys_under_load_with_zero_failures(machine):
    machine.sh("echo v1 > /var/lib/zdd/queue")
    wait_until(lambda: serving("v1"), 60, "v1 served")
    since = f"@{int(time.time())}"
    with LoadClient(SITE_PORT) as load:
        time.sleep(2)
        machine.sh("echo v2 > /var/lib/zdd/queue")
        wait_until(
            lambda: "last deploy v2: succeeded" in machine.run("zdd", "status", check=False).stdout,
            90,
            "the deploy of v2",
        )
        time.sleep(images.SLOW_SECONDS + 0.5)
    assert load.failures == [], load.summary()
    assert get() == (200, "v2")

    status = machine.run("systemctl", "status", "zdd", "--no-pager", check=False).stdout
    assert "Active: active (running)" in status
    assert 'Status: "idle; web v2 since' in status

    journal = machine.run("journalctl", "-u", "zdd", "--no-pager").stdout
    for line in ("web: v1 -> v2: deploy", "started", "healthy after", "switched", "drained", "succeeded"):
        assert line in journal, line
    records = [
        json.loads(x) for x in machine.run("journalctl", "-u", "zdd", "-o", "json", "--no-pager").stdout.splitlines()
    ]
    succeeded = [r for r in records if "v1 -> v2: deploy" in r.get("MESSAGE", "") and "succeeded" in r["MESSAGE"]]
    assert succeeded and succeeded[0]["PRIORITY"] == "5"  # notice
    assert succeeded[0]["ZDD_APP"] == "web" and succeeded[0]["ZDD_TAG"] == "v2" and succeeded[0]["ZDD_DEPLOY_ID"]
    by_app = machine.run("journalctl", "ZDD_APP=web", "--no-pager", "-o", "cat").stdout
    assert "v1 -> v2" in by_app
    errors = machine.run("journalctl", "-u", "zdd", "-p", "err", "--since", since, "--no-pager", "-o", "cat")
    assert errors.stdout.strip() in ("", "-- No entries --"), errors.stdout


def test_a_failed_deploy_is_an_error_in_the_journal(machine):
    machine.sh("echo nosuchtag > /var/lib/zdd/queue")
    wait_until(
        lambda: (
            "zdd-it/web:nosuchtag is not on this host"
            in machine.run("journalctl", "-u", "zdd", "-p", "err", "--no-pager", "-o", "cat").stdout
        ),
        60,
        "the failure at priority err",
    )
    assert get() == (200, "v2")


def test_systemctl_reload_rereads_the_config(machine):
    machine.write("/etc/zdd/zdd.toml", ZDD_TOML.replace('stop_timeout = "5s"', 'stop_timeout = "4s"'))
    machine.run("systemctl", "reload", "zdd")
    wait_until(
        lambda: "reloaded config" in machine.run("journalctl", "-u", "zdd", "--no-pager").stdout, 30, "the reload"
    )
    assert machine.run("systemctl", "is-active", "zdd").stdout.strip() == "active"


def test_a_hung_agent_is_restarted_by_the_watchdog(machine):
    machine.write("/etc/systemd/system/zdd.service.d/watchdog.conf", "[Service]\nWatchdogSec=3s\n")
    machine.run("systemctl", "daemon-reload")
    machine.run("systemctl", "restart", "zdd")
    wait_until(
        lambda: machine.run("systemctl", "is-active", "zdd", check=False).stdout.strip() == "active", 30, "zdd active"
    )
    hung = main_pid(machine)
    machine.run("kill", "-STOP", str(hung))
    wait_until(lambda: main_pid(machine) not in (hung, 0), 30, "a new agent after the watchdog fired")
    journal = machine.run("journalctl", "-u", "zdd", "--no-pager").stdout
    assert "Watchdog timeout" in journal
    assert get() == (200, "v2")  # the app never depended on the agent's process
    machine.run("rm", "/etc/systemd/system/zdd.service.d/watchdog.conf")
    machine.run("systemctl", "daemon-reload")


def test_restart_while_idle_drops_no_request(machine):
    wait_until(
        lambda: machine.run("systemctl", "is-active", "zdd", check=False).stdout.strip() == "active", 30, "zdd active"
    )
    with LoadClient(SITE_PORT, slow_workers=1) as load:
        time.sleep(1)
        machine.run("systemctl", "restart", "zdd")
        time.sleep(2)
    assert load.failures == [], load.summary()
    assert machine.run("systemctl", "is-active", "zdd").stdout.strip() == "active"


def test_zdd_dns_restarts_and_a_stopped_agent_drop_no_request(machine):
    # Caddy asks zdd dns (every 100 ms per app) which container serves. systemd holds its socket while
    # the service restarts, so a lookup waits for the new process instead of failing; and the agent is
    # not needed for serving at all.
    with LoadClient(SITE_PORT) as load:
        time.sleep(1)
        for _ in range(3):
            machine.run("systemctl", "restart", "zdd-dns.service")
            time.sleep(1)
        machine.run("systemctl", "stop", "zdd")
        time.sleep(2)
        assert get() == (200, "v2")
        machine.run("systemctl", "start", "zdd")
        time.sleep(1)
    assert load.failures == [], load.summary()
    assert machine.run("systemctl", "show", "-p", "NRestarts", "--value", "zdd-dns").stdout.strip() == "0"


def test_an_agent_that_keeps_failing_is_given_up_and_notify_is_told_while_the_site_serves(machine):
    # A config the agent refuses (one mistake, anywhere in the file): it exits 2 at every start, systemd
    # gives up after StartLimitBurst (5 a minute), and OnFailure= starts zdd-failure@zdd.service, which
    # tells [notify] with systemd's MONITOR_SERVICE_RESULT.
    # This machine shares the host's network: the webhook on loopback is reachable (IPAddressAllow=localhost).
    good = (machine.root / "etc/zdd/zdd.toml").read_text()
    try:
        with WebhookReceiver() as receiver:
            broken = good.replace("port = 8080", 'port = "8080"') + f'\n[notify]\nwebhook = "{receiver.url}"\n'
            machine.write("/etc/zdd/zdd.toml", broken)
            machine.run("systemctl", "restart", "zdd", check=False)

            def given_up() -> bool:
                return machine.run("systemctl", "is-failed", "zdd", check=False).stdout.strip() == "failed"

            wait_until(given_up, 90, "systemd giving up on the agent")
            wait_until(lambda: receiver.bodies, 30, "the report")
            assert get() == (200, "v2")  # Caddy and zdd dns serve on without the agent
            time.sleep(2)  # any report still on its way
        # Some systemd versions also start OnFailure= at each failed start before giving up: each says so.
        print("reports:", [b["reason"] for b in receiver.bodies])
        assert {b["result"] for b in receiver.bodies} == {"agent-failed"}
        assert all(b["reason"].startswith("zdd.service failed") for b in receiver.bodies)
        assert receiver.bodies[-1]["reason"].endswith("; journalctl -u zdd.service")
    finally:
        machine.write("/etc/zdd/zdd.toml", good)
        machine.run("systemctl", "reset-failed", "zdd", check=False)
        machine.run("systemctl", "restart", "zdd")
    assert "web: v2 since" in machine.run("zdd", "status", check=False).stdout


def test_upgrade_keeps_config_and_state_and_never_interrupts_the_app(machine, deb):
    config_before = (machine.root / "etc/zdd/zdd.toml").read_text()
    pid_before = main_pid(machine)
    with LoadClient(SITE_PORT, slow_workers=1) as load:
        time.sleep(1)
        machine.run(
            "apt-get", "install", "-y", "-q", "--reinstall", "-o", "Dpkg::Options::=--force-confold", f"/opt/{deb.name}"
        )
        time.sleep(2)
    assert load.failures == [], load.summary()
    assert (machine.root / "etc/zdd/zdd.toml").read_text() == config_before  # the operator's edit stays
    assert main_pid(machine) != pid_before  # the agent was restarted onto the new files...
    assert "web: v2 since" in machine.run("zdd", "status", check=False).stdout  # ...and remembers


def test_remove_leaves_the_app_running_and_purge_leaves_no_state(machine):
    machine.run("apt-get", "remove", "-y", "-q", "zdd")
    assert machine.run("pgrep", "-f", "zdd (run|dns)", check=False).returncode == 1
    # The package's prerm ran `zdd detach`: Caddy proxies to v2's container without zdd dns.
    assert "a fixed upstream" in (machine.root / "var/lib/zdd-caddy/web.caddy").read_text()
    assert get() == (200, "v2")
    machine.run("apt-get", "purge", "-y", "-q", "zdd")
    assert machine.run("test", "-e", "/var/lib/zdd", check=False).returncode == 1
    assert get() == (200, "v2")  # Caddy keeps the last route it loaded; the container runs on
    assert machine.run("test", "-e", "/var/lib/zdd-caddy/web.caddy", check=False).returncode == 0
