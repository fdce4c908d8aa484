"""Generated hostile queue contents: seeded, so a failure can be replayed."""

import random
import string

REPO = "registry.example.com/acme/web"
DIGEST = "sha256:" + "ab" * 32

_SEEDS = [
    "",
    " ",
    "\t",
    "\n",
    "\r\n",
    "v1\x00",
    "\x00",
    "../../etc/passwd",
    "/etc/shadow",
    "v1; rm -rf /",
    "$(reboot)",
    "`id`",
    "v1 && curl evil",
    "v1|sh",
    "'v1'",
    '"v1"',
    "v1\\",
    "*",
    "?",
    "~root",
    "evil.example.com/acme/web:v1",
    "registry.example.com/acme/web2:v1",
    "registry.example.com/acme:v1",
    "registry.example.com:443/acme/web:v1",
    "docker.io/library/web:v1",
    "web:v1",
    "localhost:5000/acme/web:v1",
    "registry.example.com/acme/web@sha256:abc",
    "sha256:" + "g" * 64,
    "sha256:" + "a" * 63,
    "sha1:" + "a" * 40,
    "md5:" + "0" * 32,
    "@",
    "@sha256:",
    ":v1",
    "v1:",
    "web v1 extra",
    "WEB v1",
    "web\tv1\tv2",
    "ｖ1",
    "v١",
    "v1\u200b",
    "\u202ev1",
    "ᴠ1",
    "v1\ufeff",
    "ѵ1",
    "v\u00e91",
    "-v1",
    ".v1",
    "v" * 129,
    "x" * 600,
    REPO + ":" + "t" * 129,
    "registry.example.com/ACME/web:v1",
    "registry.example.com/acme/web:v1@" + DIGEST[:-1],
    "registry.example.com/acme/web::v1",
]


def hostile_lines(count: int, seed: int = 1) -> list[str]:
    """`count` queue lines: the fixed nasty cases, then random printable/binary/unicode/reference noise."""
    rng = random.Random(seed)
    lines = list(_SEEDS)
    alphabets = [
        string.printable,
        string.ascii_letters + string.digits + "._-:/@",
        "".join(map(chr, range(0, 256))),
        "vV0123456789ｖ٠١𝟘𝟙.-_:@/ \t",
    ]
    while len(lines) < count:
        kind = rng.randrange(5)
        if kind == 0:  # random characters from one alphabet
            alphabet = rng.choice(alphabets)
            lines.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 80))))
        elif kind == 1:  # a reference to another registry or repository
            host = rng.choice(["evil.example.com", "registry.example.com", "127.0.0.1:5000", "docker.io", ""])
            path = rng.choice(["acme/web", "acme/web2", "web", "library/web", "acme/web/extra"])
            name = f"{host}/{path}" if host else path
            lines.append(f"{name}:{rng.choice(['v1', 'latest', 'x' * rng.randrange(1, 140)])}")
        elif kind == 2:  # a digest, well or badly formed
            hexdigits = "".join(rng.choice("0123456789abcdefABCDEFg") for _ in range(rng.choice([32, 63, 64, 65])))
            lines.append(f"{rng.choice(['sha256', 'sha512', 'md5', 'SHA256'])}:{hexdigits}")
        elif kind == 3:  # a tag with a shell or path twist
            twist = rng.choice([";", "|", "&", "$(", "`", "../", "\x00", "\\", " ", "\u200b", "%00", "%2e%2e"])
            lines.append(f"v{rng.randrange(100)}{twist}{rng.choice(['id', 'reboot', 'etc/passwd', ''])}")
        else:  # an app name plus something
            lines.append(f"{rng.choice(['web', 'api', 'WEB', '..', ''])} {rng.choice(['v1', '$(id)', DIGEST, ''])}")
    return lines[:count]


CONFIG = 'state_dir = "/var/lib/zdd"\n[caddy]\nadmin = "127.0.0.1:2019"\n[apps.web]\nimage = "r/web"\nport = 8080\n'


def mutations(count: int, seed: int = 7) -> list[str]:
    """Broken variants of a minimal zdd.toml: inserted bad keys, deleted lines, stray characters."""
    rng = random.Random(seed)
    pieces = [
        'port = "x"',
        "port = -1",
        "port = 1e9",
        'image = ""',
        "image = 3",
        'health_path = "up"',
        "[apps.web.env]\nA = [1]",
        '[caddy]\nadmin = "8.8.8.8:2019"',
        'drain_timeout = "forever"',
        "[[apps]]",
        "apps = 3",
        "= 1",
        "[apps.web",
        'state_dir = "relative"',
        "\x00",
        'pull = "maybe"',
        'labels = { "zdd.app" = "x" }',
        "health_successes = 0",
        "stop_timeout = -5",
        '[apps."Bad Name"]',
    ]
    out = []
    for _ in range(count):
        lines = CONFIG.splitlines()
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(3)
            if op == 0:
                lines.insert(rng.randrange(len(lines) + 1), rng.choice(pieces))
            elif op == 1 and lines:
                del lines[rng.randrange(len(lines))]
            elif lines:
                i = rng.randrange(len(lines))
                cut = rng.randrange(len(lines[i]) + 1)
                lines[i] = lines[i][:cut] + rng.choice(["", '"', "]", "=", "\\", "é"]) + lines[i][cut:]
        out.append("\n".join(lines) + "\n")
    return out
