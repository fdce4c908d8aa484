"""Bad input and who may deploy, against a real agent, dockerd and Caddy, with a client throughout."""

import grp
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.test_deploy import assert_no_failures, wait_until
from tests.support import images
from tests.support.fuzz import hostile_lines, mutations
from tests.support.load import LoadClient
from zdd.state import StateStore

ONLY_DEBIAN_CADDY = pytest.mark.parametrize("caddy_binary", ["caddy2.6"], indirect=True)


def append(queue: Path, data: bytes) -> None:
    fd = os.open(queue, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


@ONLY_DEBIAN_CADDY
def test_a_thousand_hostile_queue_entries_never_crash_the_agent_nor_deploy_a_foreign_image(stack):
    stack.start()
    assert stack.deploy("v1").returncode == 0
    queue = stack.state_dir / "queue"
    lines = hostile_lines(1000, seed=3)
    # What the agent will see: the bytes, split at each newline as it splits them, blank lines skipped.
    batches = [lines[i : i + 50] for i in range(0, len(lines), 50)]
    seen = [
        b.decode("utf-8", errors="replace").strip()
        for batch in batches
        for b in ("\n".join(batch)).encode("utf-8", errors="surrogateescape").split(b"\n")
    ]
    seen = [line for line in seen if line]

    def verdicts() -> int:  # every non-blank line gets exactly one in the log: rejected, or queued
        return stack.agent.log.count("queue: rejected entry") + stack.agent.log.count(": queued ")

    before = verdicts()  # v1's own request

    def answered() -> int:
        return verdicts() - before

    with LoadClient(stack.caddy.port, slow_workers=1) as load:
        for batch in batches:
            append(queue, ("\n".join(batch) + "\n").encode("utf-8", errors="surrogateescape"))
            time.sleep(0.05)
        append(queue, b"v" * (10 * 1024 * 1024) + b"\n")  # a 10 MB line
        wait_until(lambda: answered() >= len(seen), 120, f"a verdict on each of {len(seen)} lines")
        wait_until(lambda: "refused unread" in stack.agent.log, 30, "the 10 MB line refused")
        time.sleep(1)
        assert stack.agent.process.poll() is None, "the agent died"
        assert stack.deploy("v2").returncode == 0  # and it still deploys a valid tag
        stack.caddy.wait_serving("v2")
    refused = stack.agent.log.count("queue: rejected entry")
    print(
        f"{len(lines)} hostile lines ({len(seen)} non-blank as split), {refused} refused, "
        f"1 line of 10 MB refused unread; {load.summary()}"
    )
    assert answered() == len(seen) + 1  # no line answered twice (+1: the valid v2 deploy)
    assert refused > 900  # the generator's lines are nearly all invalid: a refusal is the norm
    assert_no_failures(stack, load)
    for entry in StateStore(stack.state_dir).load().history:
        assert entry.reference.startswith(images.REPOSITORY + ":") or entry.reference.startswith(
            images.REPOSITORY + "@"
        ), entry
    assert {c.labels["zdd.reference"].rsplit(":", 1)[0] for c in stack.containers()} == {images.REPOSITORY}


@pytest.fixture
def deployers():
    """A real group of deployers with one member, and a real user outside it."""
    group, member, outsider = "zddit-deploy", "zddit-member", "zddit-outsider"
    subprocess.run(["groupadd", "-f", group], check=True)
    for user in (member, outsider):
        if subprocess.run(["id", user], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", user], check=True)
    subprocess.run(["usermod", "-a", "-G", group, member], check=True)
    yield group, member, outsider
    for user in (member, outsider):
        subprocess.run(["userdel", user], capture_output=True)
    subprocess.run(["groupdel", group], capture_output=True)


@ONLY_DEBIAN_CADDY
def test_only_root_and_the_deployers_group_may_queue_and_the_requester_is_recorded(stack, deployers, tmp_path):
    group, member, outsider = deployers
    # The state dir as the package makes it: 0750, group of the deployers (tmp_path itself is root-only).
    state = Path(f"/var/tmp/zdd-it-{os.getpid()}-{time.monotonic_ns()}")
    config_dir = state.with_name(f"{state.name}-etc")
    state.mkdir(mode=0o750)
    try:
        os.chown(state, 0, grp.getgrnam(group).gr_gid)
        os.chmod(state, 0o750)
        stack.state_dir = stack.agent.state_dir = state
        stack.caddy.caddyfile.write_text(stack.caddy.caddyfile.read_text().replace(str(tmp_path / "state"), str(state)))
        # The config where the users can read it, as /etc/zdd/zdd.toml is. Not under tmp_path: pytest keeps
        # /tmp/pytest-of-root at 0700, and resets it so whenever another pytest session starts.
        config_dir.mkdir(mode=0o755)
        stack.config_path = stack.agent.config = stack.agent.resolver.config = config_dir / "zdd.toml"
        stack.configure()
        stack.config_path.chmod(0o644)
        stack.start()
        queue = state / "queue"
        assert oct(queue.stat().st_mode & 0o777) == "0o660" and queue.stat().st_gid == grp.getgrnam(group).gr_gid

        refused = subprocess.run(
            ["runuser", "-u", outsider, "--", "sh", "-c", f"echo v1 > {queue}"], capture_output=True, text=True
        )
        assert refused.returncode != 0 and "Permission denied" in refused.stderr  # the kernel says no

        # The users run zdd as installed on a server: Debian's python3 and python3-* packages, and a copy
        # of the package they may read (this venv's python lives under /root, which they may not).
        world = Path(f"/var/tmp/zdd-it-pkg-{os.getpid()}")
        shutil.copytree(Path(__file__).resolve().parents[2] / "agent", world / "zdd", dirs_exist_ok=True)
        subprocess.run(["chmod", "-R", "a+rX", str(world)], check=True)
        zdd = ["env", f"PYTHONPATH={world}", "/usr/bin/python3", "-m", "zdd", "--config", str(stack.config_path)]
        by_member = subprocess.run(
            ["runuser", "-u", member, "--", *zdd, "deploy", "v1", "--wait"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert by_member.returncode == 0, by_member.stderr
        stack.caddy.wait_serving("v1")
        (entry,) = [e for e in StateStore(state).load().history if e.tag == "v1"]
        assert entry.requested_by == pwd.getpwnam(member).pw_uid

        foreign = subprocess.run(
            ["runuser", "-u", member, "--", *zdd, "deploy", "evil.example.com/x/web:v1"],
            capture_output=True,
            text=True,
        )
        assert foreign.returncode == 2 and "not the repository of any configured app" in foreign.stderr
        subprocess.run(["sh", "-c", f"echo evil.example.com/x/web:v1 > {queue}"], check=True)  # even root's
        wait_until(lambda: "queue: rejected entry: evil.example.com/x/web" in stack.agent.log, 10, "the refusal")
        assert stack.caddy.get() == (200, "v1")
    finally:
        stack.agent.close()
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(config_dir, ignore_errors=True)
        shutil.rmtree(stack.snippet.parent, ignore_errors=True)
        shutil.rmtree(f"/var/tmp/zdd-it-pkg-{os.getpid()}", ignore_errors=True)


def reload_answers(stack) -> int:
    log = stack.agent.log
    return log.count("reload refused") + log.count("reloaded config") + log.count("state_dir cannot change")


@ONLY_DEBIAN_CADDY
def test_fuzzed_configs_on_sighup_are_refused_and_the_running_config_stays(stack):
    stack.start()
    good = stack.config_path.read_text()
    for text in [*mutations(30, seed=11), good]:
        stack.config_path.write_text(text)
        answers = reload_answers(stack)
        stack.agent.signal(signal.SIGHUP)
        wait_until(lambda n=answers: reload_answers(stack) > n, 10, "the reload answered")
        assert stack.agent.process.poll() is None
    refused = stack.agent.log.count("reload refused")
    print(f"30 fuzzed configs sent with SIGHUP: {refused} refused, the others valid and applied")
    assert refused >= 20
    assert stack.deploy("v1").returncode == 0
    stack.caddy.wait_serving("v1")
