"""`apt install zdd` from a signed repository, and `apt upgrade` under load, in a booted Debian 12.

The repository is packaging/build-repo's, signed with a throwaway key and served over HTTP on loopback
(the machine shares this host's network). apt must refuse a Release changed after signing and a package
whose checksum is not the indexed one; the README's three lines, with the repository's address, install
zdd; then a newer version is published and `apt upgrade` runs while a deploy is in its drain, under
load: not one request may fail, the deploy ends, the next one works.

Docker as in test_packaged.py (Machine.before_zdd/after_zdd): the host's engine, through the bound socket.
"""

import functools
import http.server
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT
from tests.e2e.test_journeys import readme_block
from tests.e2e.test_packaged import CADDYFILE, SITE_PORT, ZDD_TOML, get, main_pid, serving
from tests.integration.test_deploy import wait_until
from tests.support.load import LoadClient
from tests.support.machine import Machine, booted_machine
from tests.support.net import free_port, http_get

README_URL = "https://apt.example.org/zdd"  # the README's stand-in for the repository's address
KEY = "archive@zdd.test"
# Seconds a request to the old version holds its drain open: longer than `apt upgrade` takes to restart the
# agent on a slow machine, and below this module's drain_timeout.
HOLD = 40
CONFIG = ZDD_TOML.replace('drain_timeout = "20s"', 'drain_timeout = "60s"')


def readme_lines() -> list[str]:
    lines = readme_block("### From a signed apt repository", "sh").strip().splitlines()
    assert len(lines) == 3 and README_URL in lines[0] and lines[2].startswith("apt update"), lines
    return lines


class StaticServer:
    """Any static web server will do (README): the stdlib's, on loopback, one thread per request."""

    def __init__(self, directory: Path):
        handler = functools.partial(QuietHandler, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def build_repo(env: dict[str, str], repo: Path, *debs: Path) -> str:
    built = subprocess.run(
        [str(ROOT / "packaging" / "build-repo"), "--key", KEY, str(repo), *map(str, debs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return built.stdout


@pytest.fixture(scope="module")
def gpg_env(tmp_path_factory) -> dict[str, str]:
    """A throwaway signing key, in a keyring of its own."""
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", f"zdd test <{KEY}>", "ed25519", "sign", "never"],
        env=env,
        check=True,
        capture_output=True,
    )
    return env


@pytest.fixture(scope="module")
def www(tmp_path_factory, gpg_env, deb):
    """Served on loopback: zdd/ (the repository, with the session's .deb), and two copies an attacker or
    a broken mirror could serve: tampered-release/ (InRelease edited after signing) and tampered-deb/
    (the package with one byte changed, same size, index and signature untouched)."""
    root = tmp_path_factory.mktemp("www")
    out = build_repo(gpg_env, root / "zdd", deb)
    assert f"lintian: {deb.name}: no errors, no warnings" in out
    shutil.copytree(root / "zdd", root / "tampered-release")
    in_release = root / "tampered-release" / "dists" / "bookworm" / "InRelease"
    text = in_release.read_text()
    assert "Description: zdd: zero-downtime" in text
    in_release.write_text(text.replace("Description: zdd: zero-downtime", "Description: zdd: evil-downtime"))
    shutil.copytree(root / "zdd", root / "tampered-deb")
    (package,) = (root / "tampered-deb" / "pool").rglob("zdd_*_all.deb")
    data = bytearray(package.read_bytes())
    data[len(data) // 2] ^= 0xFF
    package.write_bytes(bytes(data))
    server = StaticServer(root)
    yield root, server
    server.close()


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    with booted_machine(tmp_path_factory.mktemp("machine"), "zdd-e2e") as m:
        m.before_zdd()
        forget_downloaded_zdd(m)
        m.run("apt-get", "update", "-q", timeout=600)
        m.run("apt-get", "install", "-y", "-q", "curl", "ca-certificates", timeout=600)  # README: needed once
        yield m


def add_repository(m: Machine, url: str) -> None:
    """The README's first two lines (the key, the sources file) for the repository at `url`."""
    for line in readme_lines()[:2]:
        m.sh(line.replace(README_URL, url))


def forget_downloaded_zdd(m: Machine) -> None:
    # apt's archive cache is kept between runs (Machine.boot): another run's zdd_0.1.0 has other bytes.
    m.sh("rm -f /var/cache/apt/archives/zdd_*.deb /var/cache/apt/archives/partial/zdd_*")


def status_text(m: Machine) -> str:
    return m.run("systemctl", "show", "-p", "StatusText", "--value", "zdd").stdout.strip()


def installed_version(m: Machine) -> str:
    return m.run("dpkg-query", "-W", "-f=${Version}", "zdd", check=False).stdout.strip()


def test_apt_refuses_a_release_changed_after_signing(machine, www):
    _, server = www
    add_repository(machine, server.url("tampered-release"))
    update = machine.run("apt-get", "update", "-q", check=False)
    output = update.stdout + update.stderr
    assert update.returncode != 0, output
    assert "The following signatures were invalid" in output or "BADSIG" in output, output
    assert "0.1.0" not in machine.run("apt-cache", "policy", "zdd").stdout  # nothing of it was believed
    install = machine.run("apt-get", "install", "-y", "-q", "zdd", check=False)
    assert install.returncode != 0 and "Unable to locate package zdd" in install.stderr, install.stderr
    assert installed_version(machine) == ""


def test_apt_refuses_a_package_whose_checksum_is_not_the_signed_one(machine, www):
    _, server = www
    add_repository(machine, server.url("tampered-deb"))
    machine.run("apt-get", "update", "-q")  # the index is genuine
    install = machine.run("apt-get", "install", "-y", "-q", "zdd", check=False)
    output = install.stdout + install.stderr
    assert install.returncode != 0, output
    assert "Hash Sum mismatch" in output, output
    assert installed_version(machine) == ""


def test_the_readme_lines_install_zdd_and_it_deploys(machine, www, deb):
    _, server = www
    forget_downloaded_zdd(machine)  # nothing of the tampered package may come from apt's cache
    for line in readme_lines():
        machine.sh(line.replace(README_URL, server.url("zdd")), timeout=900)
    assert installed_version(machine) == deb.name.split("_")[1]
    machine.after_zdd()
    machine.write("/etc/zdd/zdd.toml", CONFIG)
    machine.run("systemctl", "restart", "zdd")
    wait_until(lambda: (machine.root / "var/lib/zdd-caddy/web.caddy").exists(), 30, "the snippet")
    machine.write("/etc/caddy/Caddyfile", CADDYFILE)
    machine.run("systemctl", "reload", "caddy")
    for tag in ("v1", "v2"):
        machine.sh(f"echo {tag} > /var/lib/zdd/queue")
        wait_until(
            lambda tag=tag: f"last deploy {tag}: succeeded" in machine.run("zdd", "status", check=False).stdout, 90, tag
        )
    assert get() == (200, "v2")


def test_apt_upgrade_during_a_drain_drops_nothing_and_the_deploy_ends(machine, www, gpg_env, tmp_path_factory):
    root, _ = www
    out = tmp_path_factory.mktemp("next")
    built = subprocess.run(
        [str(ROOT / "packaging" / "build-deb"), "--version", "0.1.0+1", str(out)], capture_output=True, text=True
    )
    assert built.returncode == 0 and "lintian: no errors, no warnings" in built.stdout, built.stdout + built.stderr
    (newer,) = out.glob("zdd_*_all.deb")
    published = build_repo(gpg_env, root / "zdd", newer)
    assert f"lintian: {newer.name}: no errors, no warnings" in published
    machine.run("apt-get", "update", "-q")  # the README's `apt update`; its `apt upgrade` comes mid-drain
    config_before = (machine.root / "etc/zdd/zdd.toml").read_text()
    pid_before = main_pid(machine)
    held: list[tuple[int, str]] = []
    with LoadClient(SITE_PORT, slow_workers=1) as load:
        time.sleep(1)
        holder = threading.Thread(
            target=lambda: held.append(http_get(SITE_PORT, f"/cgi-bin/sleep?{HOLD}", timeout=HOLD + 20))
        )
        holder.start()  # on v2: the drain of v2 lasts until it is answered
        time.sleep(0.5)
        machine.sh("echo v3 > /var/lib/zdd/queue")
        wait_until(lambda: "draining v2" in status_text(machine), 60, "the drain of v2")
        upgrade = machine.run("apt-get", "upgrade", "-y", "-q", timeout=600)
        holder.join(timeout=HOLD + 30)
        wait_until(
            lambda: "last deploy v3: succeeded" in machine.run("zdd", "status", check=False).stdout, 120, "v3 to end"
        )
        time.sleep(1)
    print(upgrade.stdout[-1500:])
    print(f"apt upgrade during the drain: {load.summary()}")
    assert held == [(200, "v2")]  # the request that held the drain was answered by the old version
    assert load.failures == [], load.summary()
    assert installed_version(machine) == "0.1.0+1"
    assert main_pid(machine) != pid_before  # the agent was restarted onto the new files...
    assert (machine.root / "etc/zdd/zdd.toml").read_text() == config_before  # ...with the operator's config
    journal = machine.run("journalctl", "-u", "zdd", "--no-pager", "-o", "cat").stdout
    # dpkg restarted the agent while it drained v2: the stopping agent finished the deploy first.
    stop = journal.index("web: stop requested; finishing the deploy in progress first")
    assert journal.index("web: v2 -> v3: drained", stop) > stop
    history = machine.run("zdd", "history").stdout
    for tag in ("v1", "v2", "v3"):
        assert tag in history, history
    machine.sh("echo v1 > /var/lib/zdd/queue")  # and the upgraded agent deploys
    wait_until(lambda: "last deploy v1: succeeded" in machine.run("zdd", "status", check=False).stdout, 90, "v1 again")
    assert serving("v1")


def test_apt_purge_of_the_repository_package_leaves_the_site_serving(machine):
    machine.run("apt-get", "purge", "-y", "-q", "zdd")
    assert installed_version(machine) == ""
    assert machine.run("test", "-e", "/var/lib/zdd", check=False).returncode == 1
    assert get() == (200, "v1")  # `zdd detach` gave Caddy the live container as a fixed upstream
