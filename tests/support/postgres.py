"""A real PostgreSQL 15 for the release-command tests, and an app that uses it, built locally (no registry):
Debian 12's postgresql-15, busybox and python3 installed into a copy of the end-to-end tier's
debootstrapped root, `docker import`ed once as BASE; the server and app images are built FROM it (and the
lingering app of tests/support/lingering.py).

The app (APP_REPOSITORY:TAG) serves `/` with its tag, `/up`, the load's `/cgi-bin/post` and `/cgi-bin/slow`
(as tests/support/images.py), and `/cgi-bin/items`: the rows of table
`items`, which only its release command creates. It reaches the database as `db` with the libpq
variables in ENV below (the app's `env` in zdd.toml).
"""

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker
import docker.errors

from tests.support import images
from tests.support.machine import cached_rootfs

BASE = "zdd-it/debian:base"  # bookworm with postgresql-15, busybox and python3
SERVER = "zdd-it/pg:server"
APP_REPOSITORY = "zdd-it/pgapp"
ENV = {"PGHOST": "db", "PGUSER": "app", "PGPASSWORD": "app-secret", "PGDATABASE": "app", "PGCONNECT_TIMEOUT": "3"}
PATH = "/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The server: a role and a database for the app, password logins from the network, postgres in front.
SERVER_START = """#!/bin/sh
set -e
echo "host all all 0.0.0.0/0 scram-sha-256" >> /etc/postgresql/15/main/pg_hba.conf
su postgres -c "pg_ctlcluster 15 main start"
su postgres -c "psql -q -c \\"CREATE ROLE app LOGIN PASSWORD 'app-secret'\\"" && su postgres -c "createdb -O app app"
su postgres -c "pg_ctlcluster 15 main stop"
exec su postgres -c "postgres -D /var/lib/postgresql/15/main -c config_file=/etc/postgresql/15/main/postgresql.conf \\
  -c listen_addresses='*'"
"""
ITEMS_CGI = """#!/bin/sh
rows=$(psql -tAc "SELECT string_agg(version, ',' ORDER BY version) FROM items" 2>&1)
printf 'Content-Type: text/plain\\r\\nContent-Length: %s\\r\\n\\r\\n%s' "${#rows}" "$rows"
"""
# What a migration does: create its table if need be and record the version that ran it.
RELEASE = (
    'psql -v ON_ERROR_STOP=1 -q -c "CREATE TABLE IF NOT EXISTS items (version text); '
    "INSERT INTO items VALUES ('$(cat /www/index.html)')\""
)


def build_base(client: docker.DockerClient) -> None:
    try:
        client.images.get(BASE)
        return
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="zdd-pg-") as tmp:
        root = Path(tmp) / "root"
        subprocess.run(["cp", "-a", str(cached_rootfs()), str(root)], check=True)
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")  # no service starts in the chroot
        (root / "usr/sbin/policy-rc.d").chmod(0o755)
        subprocess.run(
            [
                "chroot",
                str(root),
                "sh",
                "-c",
                "export DEBIAN_FRONTEND=noninteractive; apt-get update -q && "
                "apt-get install -y -q --no-install-recommends postgresql-15 busybox python3 && "
                "apt-get clean && rm -rf /var/lib/apt/lists/*",
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        archive = Path(tmp) / "root.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(archive), "."], check=True)
        repository, _, tag = BASE.partition(":")
        client.api.import_image_from_file(str(archive), repository=repository, tag=tag, changes=[f"ENV PATH={PATH}"])


def build_from_base(client: docker.DockerClient, tag: str, files: dict[str, tuple[str, int]], cmd: str) -> str:
    """An image FROM BASE with `files` (path: (text, mode)) and a shell CMD."""
    with tempfile.TemporaryDirectory(prefix="zdd-pg-") as tmp:
        copies = []
        for number, (path, (text, mode)) in enumerate(files.items()):
            (Path(tmp) / f"f{number}").write_text(text)
            (Path(tmp) / f"f{number}").chmod(mode)
            copies.append(f"COPY f{number} {path}")
        command = json.dumps(["/bin/sh", "-c", cmd])
        (Path(tmp) / "Dockerfile").write_text(f"FROM {BASE}\n" + "\n".join(copies) + f"\nCMD {command}\n")
        client.images.build(path=tmp, tag=tag, rm=True)
    return tag


def build(client: docker.DockerClient, app_tags: tuple[str, ...] = ("pg1", "pg2", "pg3")) -> dict[str, str]:
    """SERVER and APP_REPOSITORY:tag for each of `app_tags`: reference by name."""
    build_base(client)
    built = {"server": build_from_base(client, SERVER, {"/start.sh": (SERVER_START, 0o755)}, "exec /start.sh")}
    for tag in app_tags:
        files = {
            "/www/index.html": (tag, 0o644),
            "/www/up": ("ok\n", 0o644),
            "/www/cgi-bin/items": (ITEMS_CGI, 0o755),
            "/www/cgi-bin/post": (images.POST_CGI, 0o755),  # the load's POSTs and slow requests, as in images.py
            "/www/cgi-bin/slow": (images.SLOW_CGI, 0o755),
        }
        built[tag] = build_from_base(client, f"{APP_REPOSITORY}:{tag}", files, "exec busybox httpd -f -p 8080 -h /www")
    return built
