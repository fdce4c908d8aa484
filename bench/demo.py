"""A real demo on this machine: Caddy + an example app, v1 -> v2 under load, and the failed-request count.

    bench/run-demo [--caddy /usr/bin/caddy]

bench/run-demo (as root) first sets the machine up: tests/setup-host installs docker.io, caddy and
busybox-static, starts dockerd and creates .venv; then it runs this module with .venv/bin/python.
Everything lives in a temporary directory and is removed afterwards; nothing is sent anywhere but
loopback and zdd's own Docker network.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import docker
from docker.errors import DockerException

from bench.bench import wait, zdd_stack
from tests.support import images
from tests.support.load import LoadClient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--caddy", default="/usr/bin/caddy")
    args = parser.parse_args()
    for needed, package in ((Path(args.caddy), "caddy"), (images.BUSYBOX, "busybox-static")):
        if not needed.exists():
            parser.error(f"{needed} not found: apt-get install {package}, or run bench/run-demo as root")
    try:
        client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    except DockerException as err:
        parser.error(f"cannot reach dockerd ({err}): run bench/run-demo as root, which starts it")
    print("building the example app, versions v1 and v2 (busybox httpd, FROM scratch)")
    for tag in ("v1", "v2"):
        images.build(client, tag)
    with (
        tempfile.TemporaryDirectory() as tmp,
        zdd_stack(client, args.caddy, Path(tmp), "zdd-demo", probation="3s") as stack,
    ):
        caddy, agent = stack
        print(f"\nthe user's Caddyfile ({caddy.caddyfile}):\n{caddy.caddyfile.read_text()}")
        print(f"zdd run is ready; the site {caddy.url} answers: {caddy.get()}")
        print("$ zdd deploy v1 --wait")
        first = agent.cli("deploy", "v1", "--wait")
        print(first.stdout.strip())
        if first.returncode != 0:
            print(f"{first.stderr.strip()}\nthe first deploy failed; zdd's log:\n{agent.log}")
            return 1
        with LoadClient(caddy.port) as load:
            time.sleep(2)
            print(f"\nunder load, as a user would: echo v2 > {agent.state_dir}/queue")
            agent.echo("v2")
            wait(lambda: "last deploy v2: succeeded" in agent.cli("status").stdout, timeout=120)
            time.sleep(2)
        print("\nwhat zdd logged:")
        print("\n".join("  " + line for line in agent.log.splitlines() if "web:" in line))
        print(f"\n$ zdd status\n{agent.cli('status').stdout.strip()}")
        print(f"\nthe site now answers: {caddy.get()}")
        print(f"load during the deploy: {load.summary()}")
        print(f"FAILED REQUESTS: {len(load.failures)}")
        return 1 if load.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
