"""The operator's and the deployers' journeys, in a booted Debian 12 with the .deb installed by apt.

Everything is done as the person in question would: the operator (root) copies the README's config
example, checks it with `zdd check`, edits the Caddyfile and reloads Caddy the Debian way; a deployer
(alice, in group zdd, not root) deploys, rolls back and reads status and history; alice also drops
hostile files into the request drop; the operator restarts zdd with a request pending. The tests run
in order, each journey on from where the one before left the machine, under load from the moment a
version serves: not one request may fail, and zdd is never restarted by systemd (NRestarts stays 0).

Docker as in test_packaged.py (Machine.install_zdd): the host's engine, through the bound socket.
"""

import json
import re
import time
from pathlib import Path

import pytest

from tests.integration.test_deploy import wait_until
from tests.support import images
from tests.support.load import LoadClient
from tests.support.machine import Machine, booted_machine
from tests.support.net import http_get

ROOT = Path(__file__).resolve().parents[2]
SITE_PORT = 18091  # not test_packaged.py's 18090
NETWORK = "zdd-journeys"  # the host's engine is shared with the other tiers: a network of our own
SECRET = "DATABASE_PASSWORD=journeys-5e3a9c1f7b"  # in an env file the agent can read; must never be logged
DEPLOY_TIMEOUT = 180  # a deploy with the README's defaults: health, drain, then 30 s of probation


def readme_block(heading: str, language: str) -> str:
    """The first ```language block after `heading` in README.md, as an operator would copy it."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index(f"\n{heading}\n") :]
    match = re.search(rf"^```{language}\n(.*?)^```$", after, re.S | re.M)
    assert match, f"no ```{language} block under {heading!r} in README.md"
    return match.group(1)


def sub_once(pattern: str, replacement: str, text: str) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.M)
    assert count == 1, f"{pattern!r} matched {count} times in the README's example"
    return new


def operator_config() -> str:
    block = readme_block("### /etc/zdd/zdd.toml", "toml")
    # The only changes to the README's example: the app's image repository and port are the test app's,
    # its images are built on this host (no registry is reachable: pull = "never"), and zdd's Docker
    # network is one of this test's own, as the host's engine is shared with the other test tiers.
    config = sub_once(r'^image = "[^"]*"', f'image = "{images.REPOSITORY}"', block)
    config = sub_once(r"^port = \d+(.*)$", r'port = 8080\1\npull = "never"', config)
    return f'network = "{NETWORK}"\n' + config


def readme_import_line() -> str:
    """The `import` line of the README's Caddyfile example."""
    (line,) = [x.strip() for x in readme_block("### Caddy stays yours", "caddy").splitlines() if "import " in x]
    return line


SITE_BLOCK = f"""
:{SITE_PORT} {{
	header X-Site "the operator's own site block"
	{readme_import_line()}
}}
"""


@pytest.fixture(scope="module")
def machine(tmp_path_factory, deb):
    with booted_machine(tmp_path_factory.mktemp("machine"), NETWORK) as m:
        m.install_zdd(deb)  # zdd runs, idle: the package's zdd.toml has no app
        yield m


def get() -> tuple[int, str]:
    return http_get(SITE_PORT)


def serving(body: str) -> bool:
    try:
        return get() == (200, body)
    except OSError:
        return False


def as_alice(m: Machine, *command: str, check: bool = True):
    return m.run("runuser", "-u", "alice", "--", *command, check=check, timeout=DEPLOY_TIMEOUT + 30)


def waiting(*command: str) -> tuple[str, ...]:
    """`zdd deploy ... --wait` or `zdd rollback --wait`, which exits 4 if not done in DEPLOY_TIMEOUT."""
    return ("zdd", *command, "--wait", "--timeout", str(DEPLOY_TIMEOUT))


def zdd_journal(m: Machine, since: str) -> str:
    return m.run("journalctl", "-u", "zdd", "--since", since, "--no-pager", "-o", "cat").stdout


def assert_never_restarted(m: Machine) -> None:
    for unit in ("zdd", "zdd-dns"):
        assert m.run("systemctl", "show", "-p", "NRestarts", "--value", unit).stdout.strip() == "0", unit
    assert m.run("systemctl", "is-active", "zdd").stdout.strip() == "active"


def last_deploy(m: Machine, tag: str) -> bool:
    return f"last deploy {tag}: succeeded" in as_alice(m, "zdd", "status", check=False).stdout


def test_operator_copies_the_readme_config_and_imports_the_snippet(machine):
    config = operator_config()
    machine.write("/etc/zdd/zdd.toml", config)
    machine.run("systemctl", "reload", "zdd")  # README: "zdd idles until you add one and systemctl reload zdd"
    import_line = readme_import_line()
    snippet = import_line.split()[1]
    assert snippet == "/var/lib/zdd-caddy/web.caddy"
    wait_until(lambda: machine.run("test", "-f", snippet, check=False).returncode == 0, 30, "the snippet")

    # Before the Caddyfile imports it, `zdd check` says what to add.
    check = machine.run("zdd", "check", check=False)
    assert check.returncode == 2, check.stdout + check.stderr
    assert f"add `{import_line}` inside its site block" in check.stderr

    # Debian's Caddyfile, with the operator's site block appended, reloaded the Debian way.
    caddyfile = machine.run("cat", "/etc/caddy/Caddyfile").stdout
    machine.write("/etc/caddy/Caddyfile", caddyfile + SITE_BLOCK)
    machine.run("systemctl", "reload", "caddy")
    check = machine.run("zdd", "check", check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "/etc/zdd/zdd.toml: ok (1 app: web)" in check.stdout
    wait_until(lambda: get() == (503, "web: no version deployed yet"), 30, "the placeholder snippet")
    assert_never_restarted(machine)


def test_zdd_check_names_the_problems_of_a_broken_config(machine):
    good = machine.run("cat", "/etc/zdd/zdd.toml").stdout
    broken = sub_once(r"^port = 8080", 'port = 0\ncolour = "blue"', good)
    machine.write("/etc/zdd/zdd.toml", broken)
    since = f"@{int(time.time())}"
    check = machine.run("zdd", "check", check=False)
    assert check.returncode == 2, check.stdout + check.stderr
    assert "apps.web.port: port 0 is out of range 1-65535" in check.stderr
    assert "apps.web.colour: unknown key" in check.stderr
    # An operator who reloads anyway: the running config stays.
    machine.run("systemctl", "reload", "zdd")
    wait_until(lambda: "reload refused" in zdd_journal(machine, since), 30, "the refused reload")
    machine.write("/etc/zdd/zdd.toml", good)
    assert machine.run("zdd", "check", check=False).returncode == 0
    assert_never_restarted(machine)


def test_a_deployer_deploys_rolls_back_and_reads_the_history(machine):
    machine.run("adduser", "--disabled-password", "--gecos", "", "alice")
    machine.run("adduser", "alice", "zdd")
    uid = int(machine.run("id", "-u", "alice").stdout)

    deploy = as_alice(machine, *waiting("deploy", "v1"), check=False)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert "web: v1 is live" in deploy.stdout
    wait_until(lambda: serving("v1"), 30, "v1 served")
    status = as_alice(machine, "zdd", "status", check=False)
    assert status.returncode == 0 and "web: v1 since" in status.stdout, status.stdout + status.stderr

    with LoadClient(SITE_PORT) as load:
        time.sleep(2)
        deploy = as_alice(machine, *waiting("deploy", "v2"), check=False)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        assert serving("v2")
        rollback = as_alice(machine, *waiting("rollback"), check=False)
        assert rollback.returncode == 0, rollback.stdout + rollback.stderr
        assert "web: v1 is live" in rollback.stdout
        time.sleep(images.SLOW_SECONDS + 0.5)
    assert load.failures == [], load.summary()
    assert get() == (200, "v1")

    history = as_alice(machine, "zdd", "history")
    assert history.stdout.count(f"by alice (uid {uid})") == 3, history.stdout
    entries = json.loads(as_alice(machine, "zdd", "history", "--json").stdout)
    assert [(e["tag"], e["result"], e["requested_by"]) for e in entries] == [
        ("v1", "succeeded", uid),
        ("v2", "succeeded", uid),
        ("v1", "succeeded", uid),
    ]
    assert_never_restarted(machine)


def test_hostile_drops_are_set_aside_and_an_echo_still_deploys(machine):
    # The operator keeps a secret where the agent can read it (an app's env_file, say).
    machine.write("/etc/zdd/web.env", SECRET + "\n")
    machine.run("chown", "root:zdd", "/etc/zdd/web.env")
    machine.run("chmod", "0640", "/etc/zdd/web.env")
    since = f"@{int(time.time())}"
    drop = "/var/lib/zdd/requests"
    with LoadClient(SITE_PORT) as load:
        time.sleep(1)
        as_alice(machine, "mkfifo", f"{drop}/x.req")
        as_alice(machine, "mkdir", f"{drop}/d.req")
        as_alice(machine, "ln", "-s", "/etc/zdd/web.env", f"{drop}/s.req")
        as_alice(machine, "sh", "-c", "echo v2 > /var/lib/zdd/queue")
        wait_until(lambda: last_deploy(machine, "v2") and serving("v2"), DEPLOY_TIMEOUT, "the echoed v2")
        time.sleep(images.SLOW_SECONDS + 0.5)
    assert load.failures == [], load.summary()

    journal = zdd_journal(machine, since)
    for name in ("x.req", "d.req", "s.req"):
        refusals = [line for line in journal.splitlines() if f"request {name} refused" in line]
        assert len(refusals) == 1, (name, journal)
    set_aside = sorted(as_alice(machine, "ls", drop).stdout.split())
    assert set_aside == ["d.req.rejected", "s.req.rejected", "x.req.rejected"]
    everything = machine.run("journalctl", "--no-pager", "-o", "json").stdout
    assert SECRET.split("=")[1] not in everything
    assert_never_restarted(machine)


def test_a_request_dropped_while_zdd_is_stopped_is_deployed_when_it_starts(machine):
    uid = int(machine.run("id", "-u", "alice").stdout)
    with LoadClient(SITE_PORT) as load:
        time.sleep(1)
        machine.run("systemctl", "stop", "zdd")
        queued = as_alice(machine, "zdd", "deploy", "v3", check=False)
        assert queued.returncode == 0, queued.stdout + queued.stderr
        time.sleep(1)
        assert get() == (200, "v2")  # nothing deploys while zdd is stopped; the site serves on
        machine.run("systemctl", "start", "zdd")
        wait_until(lambda: last_deploy(machine, "v3") and serving("v3"), DEPLOY_TIMEOUT, "v3 after the start")
        time.sleep(images.SLOW_SECONDS + 0.5)
    assert load.failures == [], load.summary()
    (entry,) = [e for e in json.loads(as_alice(machine, "zdd", "history", "--json").stdout) if e["tag"] == "v3"]
    assert (entry["result"], entry["requested_by"]) == ("succeeded", uid)
    assert_never_restarted(machine)


def test_the_operator_runs_two_replicas_and_a_deploy_swaps_both(machine):
    # The operator sets `replicas = 2` (README's config table) and reloads; alice deploys the live
    # version again, which now starts two containers of it; the site serves throughout.
    config = machine.run("cat", "/etc/zdd/zdd.toml").stdout
    machine.write("/etc/zdd/zdd.toml", sub_once(r"^(port = 8080.*)$", r"\1\nreplicas = 2", config))
    assert machine.run("zdd", "check", check=False).returncode == 0
    machine.run("systemctl", "reload", "zdd")
    with LoadClient(SITE_PORT) as load:
        time.sleep(1)
        deploy = as_alice(machine, *waiting("deploy", "v3"), check=False)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        time.sleep(images.SLOW_SECONDS + 0.5)
    assert load.failures == [], load.summary()

    report = json.loads(as_alice(machine, "zdd", "status", "--json").stdout)["web"]
    assert report["current"] == "v3" and len(report["replicas"]) == 2, report
    names = [r["container"] for r in report["replicas"]]
    assert names[1] == names[0] + "-2", names
    # Each replica answers: Caddy spreads new visitors over both containers.
    seen = set()
    wait_until(lambda: seen.add(whoami()) or len(seen) == 2, 30, "both replicas answering")
    assert {answer.split()[0] for answer in seen} == {"v3"}
    logs = machine.run("zdd", "logs", "web", "--replica", "2", "-n", "5", check=False)
    assert logs.returncode == 0, logs.stderr
    assert_never_restarted(machine)


def whoami() -> str:
    status, body = http_get(SITE_PORT, "/cgi-bin/whoami")
    assert status == 200, (status, body)
    return body
