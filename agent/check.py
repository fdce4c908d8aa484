"""`zdd check`: what would stop zdd or Caddy on this host, each problem one line naming its key.

Offline (the file only) is config.py's validation. Here: Caddy's admin API answers, zdd dns answers, the
Caddyfile imports each app's snippet and Caddy can adapt it, and the user Caddy runs as can read every
snippet (Caddy refuses a Caddyfile whose import it cannot read: the site goes down at its next start).
"""

import grp
import os
import pwd
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import dns
from .caddy import CaddyAdmin, adapt_caddyfile, caddyfile_imports
from .config import Config
from .errors import ConfigError, PermanentError, TemporaryError, ZddError
from .registry_auth import exposure, load_auths
from .routes import DOMAIN

CADDY_USER = "caddy"  # Debian's caddy.service runs as this user
AGENT_USER = "zdd"  # the package's zdd.service runs as this user


@dataclass(frozen=True)
class Who:
    uid: int
    gids: frozenset[int]


def user(name: str) -> Who | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return Who(entry.pw_uid, frozenset(os.getgrouplist(name, entry.pw_gid)))


def caddy_user(proc: Path = Path("/proc")) -> tuple[str, Who] | None:
    """The user the running Caddy runs as (the first process named caddy we may see), else Debian's."""
    for status in proc.glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if fields.get("Name", "").strip() == "caddy":
            uid = int(fields["Uid"].split()[1])  # effective uid
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                return str(uid), Who(uid, frozenset({int(fields["Gid"].split()[1])}))
            found = user(name)
            return (name, found) if found else None
    found = user(CADDY_USER)
    return (CADDY_USER, found) if found else None


def may(who: Who, st: os.stat_result, bit: int) -> bool:
    """Unix permission check for `who` on a file with `st`; bit is 4 (read), 2 (write) or 1 (execute)."""
    if who.uid == 0:
        return True
    if st.st_uid == who.uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid in who.gids:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def unreadable_by(path: Path, who: Who) -> str | None:
    """Why `who` cannot read `path` (a directory on the way it cannot enter, or the file), else None."""
    try:
        for directory in reversed(path.parents):
            if not may(who, directory.stat(), 1):
                return f"cannot enter {directory} ({_mode(directory)})"
        if not may(who, path.stat(), 4):
            return f"cannot read it ({_mode(path)})"
    except FileNotFoundError as err:
        return f"{err.filename} does not exist"
    return None


def _mode(path: Path) -> str:
    st = path.stat()
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    return f"{stat.filemode(st.st_mode)} {owner}:{group}"


def check_host(config: Config) -> list[str]:
    problems = []
    try:
        CaddyAdmin(config.caddy.admin, timeout=3).request("GET", "/config/")
    except (TemporaryError, PermanentError) as err:
        problems.append(f"caddy.admin: {err}")
    try:
        dns.resolve(config.caddy.resolver, f"check.{DOMAIN}")
    except OSError as err:
        problems.append(
            f"caddy.resolver: zdd dns does not answer at {config.caddy.resolver} ({err or type(err).__name__}); "
            "Caddy finds each app's container through it: systemctl enable --now zdd-dns.socket"
        )
    try:
        text = config.caddy.caddyfile.read_text(encoding="utf-8")
    except OSError as err:
        problems.append(f"caddy.caddyfile: {config.caddy.caddyfile}: {err.strerror}")
        return problems
    caddy = caddy_user()
    for name in config.apps:
        snippet = config.snippet_path(name)
        if not caddyfile_imports(text, snippet):
            problems.append(
                f"caddy.caddyfile: {config.caddy.caddyfile} does not import app {name}'s upstream; "
                f"add `import {snippet}` inside its site block"
            )
        why = unreadable_by(snippet, caddy[1]) if caddy and snippet.exists() else None
        if why:
            problems.append(
                f"caddy.snippet_dir: user {caddy[0]}, who runs Caddy, {why} for {snippet}: Caddy would refuse "
                "the Caddyfile; use a snippet dir outside the 0750 state dir (the default, <state_dir>-caddy, is)"
            )
    try:
        adapt_caddyfile(config.caddy)
    except ZddError as err:
        problems.append(f"caddy.caddyfile: {err}")
    return problems


def check_docker(config: Config, network_exists: Callable[[str], bool], manages_swarm: Callable[[], bool]) -> list[str]:
    """What only the Docker engine can tell: the networks apps join exist (a deploy would fail at its start),
    and the engine manages a Swarm if an app runs on one. Raises TemporaryError when the engine cannot be
    asked (down, or this user may not use its socket)."""
    problems = []
    on_swarm = [name for name, app in config.apps.items() if app.engine == "swarm"]
    if on_swarm and not manages_swarm():
        problems.append(
            f"apps.{on_swarm[0]}.engine: the Docker engine at {config.docker_host} is not a Swarm manager; "
            "run zdd on a manager node (docker swarm init, or docker node promote)"
        )
    for name, app in config.apps.items():
        for network in app.networks:
            if not network_exists(network):
                problems.append(
                    f"apps.{name}.networks: Docker network {network!r} does not exist; "
                    f"create it (docker network create {network}) and attach the app's database to it"
                )
    return problems


def check_registry_auth(config: Config) -> tuple[list[str], str | None]:
    """The credentials file parses as Docker's config.json, only its owner may read it, and that owner is
    the user the packaged agent runs as. Returns the problems and a warning (who may not read it)."""
    path = config.registry_auth
    if not path.exists():
        return [], None
    problems = [f"registry_auth: {why}" for why in [exposure(path)] if why]
    warning = None
    agent, owner = user(AGENT_USER), path.stat().st_uid
    if agent and owner != agent.uid:
        # Root may read it for zdd check, but the packaged agent runs as user zdd: every pull would fail.
        warning = f"registry_auth: {path} belongs to uid {owner}, not {AGENT_USER} (the agent): chown {AGENT_USER} FILE"
    if not os.access(path, os.R_OK):
        return problems, f"registry_auth: {path} not checked: only its owner may read it (run zdd check as root)"
    try:
        load_auths(path)
    except ConfigError as err:
        problems += [f"registry_auth: {problem}" for problem in err.problems]
    return problems, warning
