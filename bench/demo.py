"""A real demo on this machine: Caddy + an example app, v1 -> v2 under load, and the failed-request count.

    .venv/bin/python -m bench.demo [--caddy /usr/bin/caddy]

Needs a running dockerd and Caddy (see README). Everything lives in a temporary directory and is
removed afterwards; nothing is sent anywhere but loopback and zdd's own Docker network.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import docker

from bench.bench import wait, zdd_stack
from tests.support import images
from tests.support.load import LoadClient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--caddy", default="/usr/bin/caddy")
    args = parser.parse_args()
    client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
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
        print(agent.cli("deploy", "v1", "--wait").stdout.strip())
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
