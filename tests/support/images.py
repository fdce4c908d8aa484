"""Test images built locally (no registry is reachable): busybox httpd in a FROM scratch image.

Every image serves `/` with its version, `/up` for health, `/cgi-bin/slow` that answers after
SLOW_SECONDS, so a request can be in flight at the moment of the switch, `/cgi-bin/post` that reads
a POST's body and answers the version, `/cgi-bin/sleep?N` that answers after N seconds (a request
that holds a drain open), `/cgi-bin/hostup`, a health check that (like Rails or Django)
answers 403 to any Host but APP_HOST, and `/cgi-bin/peer`, the answer of http://accessory:8080/ (an
accessory reached by name on a network the app joins), and `/cgi-bin/whoami`, the version and the
container's host name (Docker's short container id), which tells replicas apart.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import docker

REPOSITORY = "zdd-it/web"
SLOW_SECONDS = 1.5
DIES_AFTER = 6  # seconds the "dies" variant serves before it exits
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: no libraries needed in the image

# Handles SIGTERM like a well-behaved server: keeps serving for a moment, then exits.
GRACEFUL = """#!/bin/sh
httpd -f -p 8080 -h /www &
pid=$!
trap 'sleep 1; kill $pid; wait $pid; exit 0' TERM
wait $pid
"""
# CGI answers carry their Content-Length, as real app servers' do: without it the body ends when
# httpd closes the connection, and Caddy 2.6.2 now and then cuts such a body short ("aborting with
# incomplete response: use of closed network connection", seen without any deploy or reload). And they
# say `Connection: close`, because httpd does close: Caddy would otherwise pool the connection and send
# the next POST into a closed socket (a 502 that Go's transport replays for GETs only).
CGI_ANSWER = """printf 'Content-Type: text/plain\\r\\nContent-Length: %s\\r\\nConnection: close\\r\\n\\r\\n' \\
  "$(wc -c < /www/index.html)"
cat /www/index.html
"""
SLOW_CGI = f"""#!/bin/sh
sleep {SLOW_SECONDS}
{CGI_ANSWER}"""
SLEEP_CGI = f"""#!/bin/sh
case "$QUERY_STRING" in ''|*[!0-9]*) QUERY_STRING=1 ;; esac
sleep "$QUERY_STRING"
{CGI_ANSWER}"""
POST_CGI = (
    """#!/bin/sh
head -c "${CONTENT_LENGTH:-0}" >/dev/null
"""
    + CGI_ANSWER
)
APP_HOST = "app.example.com"
HOSTUP_CGI = f"""#!/bin/sh
if [ "$HTTP_HOST" = "{APP_HOST}" ]; then
  printf 'HTTP/1.1 200 OK\\r\\nContent-Length: 3\\r\\nConnection: close\\r\\n\\r\\nok\\n'
else
  printf 'HTTP/1.1 403 Forbidden\\r\\nContent-Length: 13\\r\\nConnection: close\\r\\n\\r\\nblocked host\\n'
fi
"""
# busybox-static's wget and nc crash on a host name (static glibc cannot load NSS): nslookup asks Docker's
# DNS, as the app's own resolver would, and nc talks to the address.
PEER_CGI = """#!/bin/sh
ip=$(nslookup accessory 2>/dev/null | awk '/^Address: /{print $2; exit}')
answer=$( (printf 'GET / HTTP/1.0\\r\\n\\r\\n'; sleep 1) | nc -w 2 "$ip" 8080 2>&1 | tail -n 1)
printf 'HTTP/1.1 200 OK\\r\\nContent-Length: %s\\r\\nConnection: close\\r\\n\\r\\n%s' "${#answer}" "$answer"
"""
# For the WebSocket test: a 101 upgrade, then echo every line back, on the same port as /up.
WS_SERVER = """#!/bin/sh
read -r method path proto
while read -r line; do [ "$(printf '%s' "$line" | tr -d '\\r')" = "" ] && break; done
case "$path" in
  /up) printf 'HTTP/1.1 200 OK\\r\\nContent-Length: 3\\r\\nConnection: close\\r\\n\\r\\nok\\n' ;;
  /ws) printf 'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\n'
       while read -r line; do echo "$(cat /www/index.html) $line"; done ;;
  *) printf 'HTTP/1.1 200 OK\\r\\nContent-Length: %s\\r\\nConnection: close\\r\\n\\r\\n%s' \\
       "$(wc -c < /www/index.html)" "$(cat /www/index.html)" ;;
esac
"""

VARIANTS = {
    # name: (command, healthy, extra files)
    "graceful": (["/bin/sh", "/app/run.sh"], True),
    "abrupt": (["httpd", "-f", "-p", "8080", "-h", "/www"], True),  # exits at once on SIGTERM
    "port9090": (["httpd", "-f", "-p", "9090", "-h", "/www"], True),  # a version that moved to another port
    "sick": (["httpd", "-f", "-p", "8080", "-h", "/www"], False),  # /up answers 404
    # Healthy except on the Swarm node named node2 ($NODE, from the service's {{.Node.Hostname}} template).
    "node2-sick": (["/bin/sh", "-c", "case $NODE in node2) rm /www/up;; esac; exec /bin/sh /app/run.sh"], True),
    "crash": (["/bin/sh", "-c", "echo 'fatal: cannot open database' >&2; exit 1"], True),
    "ws": (["nc", "-ll", "-p", "8080", "-e", "/app/ws.sh"], True),
    # Needs 200 MB before it serves: under a memory limit the kernel kills it in the health gate.
    "hog": (["/bin/sh", "-c", "dd if=/dev/zero of=/dev/null bs=200M count=1 && exec httpd -f -p 8080 -h /www"], True),
    # Healthy at first, then dies: for the probation. (Its restart policy brings it back, to die again.)
    "dies": (
        ["/bin/sh", "-c", f"httpd -p 8080 -h /www; sleep {DIES_AFTER}; echo 'fatal: lost the database' >&2; exit 3"],
        True,
    ),
}
# Reads a POST's body first, so that it serves the load client's POSTs too.
WHOAMI_CGI = """#!/bin/sh
head -c "${CONTENT_LENGTH:-0}" >/dev/null
answer="$(cat /www/index.html) $(hostname)"
printf 'Content-Type: text/plain\\r\\nContent-Length: %s\\r\\nConnection: close\\r\\n\\r\\n%s' "${#answer}" "$answer"
"""


def build(
    client: docker.DockerClient, tag: str, variant: str = "graceful", repository: str = REPOSITORY, padding_mb: int = 0
) -> str:
    """Build repository:tag whose `/` answers `tag`. Returns the image reference.

    `padding_mb` adds a layer of random bytes, so that pulling the image takes a measurable moment."""
    command, healthy = VARIANTS[variant]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy(BUSYBOX, root / "busybox")
        www = root / "www"
        (www / "cgi-bin").mkdir(parents=True)
        (www / "index.html").write_text(tag + "\n")
        if healthy:
            (www / "up").write_text("ok\n")
        (www / "cgi-bin" / "slow").write_text(SLOW_CGI)
        (www / "cgi-bin" / "slow").chmod(0o755)
        (www / "cgi-bin" / "post").write_text(POST_CGI)
        (www / "cgi-bin" / "post").chmod(0o755)
        for cgi, text in (("hostup", HOSTUP_CGI), ("peer", PEER_CGI), ("sleep", SLEEP_CGI), ("whoami", WHOAMI_CGI)):
            (www / "cgi-bin" / cgi).write_text(text)
            (www / "cgi-bin" / cgi).chmod(0o755)
        (root / "app").mkdir()
        (root / "app" / "run.sh").write_text(GRACEFUL)
        (root / "app" / "ws.sh").write_text(WS_SERVER)
        (root / "app" / "ws.sh").chmod(0o755)
        (root / "app" / "padding").write_bytes(os.urandom(padding_mb * 1024 * 1024))
        (root / "Dockerfile").write_text(
            "FROM scratch\n"
            "COPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
            "COPY www /www\nCOPY app /app\n"
            f"CMD {json.dumps(list(command))}\n"  # JSON: a part may hold quotes
        )
        client.images.build(path=tmp, tag=f"{repository}:{tag}", rm=True)
    return f"{repository}:{tag}"
