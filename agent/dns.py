"""The DNS side of the switch: Caddy asks zdd, not its config, which container serves an app.

Every Caddy config load replaces Caddy's HTTP server and closes its idle client connections: a
request sent on one at that moment fails (docs/ARCHITECTURE.md, "Why the switch is not a reload").
So the app's snippet names a dynamic upstream (`dynamic a NAME PORT`, Caddy 2.6+) resolved by
`zdd dns` on loopback, and a switch only changes the answer. The responder understands just what
Go's resolver asks: one question, class IN; A gets the route's addresses, AAAA gets none, and SRV (an
app on a Swarm, `dynamic srv NAME`) gets one record per task: its node's name and its port.

The pure parts (`parse_query`, `build_answer`, `answer`) are table-tested; `serve` is the loop
`zdd dns` runs on the socket systemd passes it (or one it binds), and `resolve` is the client zdd's
agent and `zdd check` use to see what Caddy will be told.
"""

import ipaddress
import logging
import os
import secrets
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("zdd.dns")

TYPE_A, TYPE_AAAA, TYPE_SRV, CLASS_IN = 1, 28, 33, 1
RCODE_OK, RCODE_NXDOMAIN, RCODE_NOTIMP = 0, 3, 4
_HEADER = struct.Struct(">HHHHHH")
# QR (a response), AA (we are the authority: Go calls an answer without AA or RA a lame referral), RA.
_RESPONSE_FLAGS = 0x8000 | 0x0400 | 0x0080
_RD = 0x0100  # recursion desired: echoed back as asked
TTL = 1  # Caddy ignores it (its own `refresh` decides); 1 s keeps any other cache honest
MAX_PACKET = 512


@dataclass(frozen=True)
class Query:
    ident: int
    flags: int
    name: str  # lower case, with the trailing dot: "web.p8080.ab12cd34.zdd.internal."
    qtype: int
    qclass: int
    question: bytes  # the question section as sent, echoed in the answer


def parse_query(packet: bytes) -> Query | None:
    """One standard query with one question; None for anything else (it is dropped unanswered)."""
    if len(packet) < _HEADER.size:
        return None
    ident, flags, qdcount, _ancount, _nscount, _arcount = _HEADER.unpack_from(packet)
    if flags & 0x8000 or (flags >> 11) & 0xF != 0 or qdcount != 1:
        return None  # a response, another opcode, or not exactly one question
    labels, offset = [], _HEADER.size
    while True:
        if offset >= len(packet):
            return None
        length = packet[offset]
        offset += 1
        if length == 0:
            break
        if length > 63 or offset + length > len(packet):
            return None  # compression pointers do not belong in a question
        labels.append(packet[offset : offset + length])
        offset += length
    if offset + 4 > len(packet):
        return None
    qtype, qclass = struct.unpack_from(">HH", packet, offset)
    offset += 4
    try:
        name = ".".join(label.decode("ascii") for label in labels).lower() + "."
    except UnicodeDecodeError:
        return None
    return Query(ident, flags, name, qtype, qclass, packet[_HEADER.size : offset])


def build_answer(query: Query, rcode: int, addresses: Sequence[str] = ()) -> bytes:
    """The response: the question echoed, then one A record per IPv4 address (name by pointer)."""
    flags = _RESPONSE_FLAGS | (query.flags & _RD) | rcode
    records = b"".join(
        b"\xc0\x0c" + struct.pack(">HHIH", TYPE_A, CLASS_IN, TTL, 4) + ipaddress.IPv4Address(ip).packed
        for ip in addresses
    )
    return _HEADER.pack(query.ident, flags, 1, len(addresses), 0, 0) + query.question + records


def encode_name(name: str) -> bytes:
    """A domain name as DNS labels, uncompressed (RFC 2782 forbids compressing an SRV target)."""
    return b"".join(bytes([len(part)]) + part.encode("ascii") for part in name.rstrip(".").split(".")) + b"\0"


def build_srv_answer(query: Query, records: Sequence[tuple[str, int]]) -> bytes:
    """The response with one SRV record per (target, port): priority 0 and weight 1 each, so Caddy has
    every task as an upstream and its load balancing spreads the requests."""
    flags = _RESPONSE_FLAGS | (query.flags & _RD) | RCODE_OK
    rdata = [struct.pack(">HHH", 0, 1, port) + encode_name(target) for target, port in records]
    body = b"".join(b"\xc0\x0c" + struct.pack(">HHIH", TYPE_SRV, CLASS_IN, TTL, len(r)) + r for r in rdata)
    return _HEADER.pack(query.ident, flags, 1, len(rdata), 0, 0) + query.question + body


def _no_srv(name: str) -> list[tuple[str, int]] | None:
    return None


def answer(
    packet: bytes,
    lookup: Callable[[str], list[str] | None],
    lookup_srv: Callable[[str], list[tuple[str, int]] | None] = _no_srv,
) -> bytes | None:
    """The reply to one query. `lookup(name)` gives the IPv4 addresses for a name zdd knows, or None;
    `lookup_srv(name)` the SRV records (target, port) of an app on a Swarm, or None."""
    query = parse_query(packet)
    if query is None:
        return None
    if query.qclass != CLASS_IN:
        return build_answer(query, RCODE_NOTIMP)
    records = lookup_srv(query.name)
    if records is not None:  # an SRV name: its records for SRV, "no data" for the rest
        return build_srv_answer(query, records if query.qtype == TYPE_SRV else ())
    addresses = lookup(query.name)
    if addresses is None:
        return build_answer(query, RCODE_NXDOMAIN)
    # A known name: A records for A, and "no data" for AAAA and the rest, so that Go's parallel
    # A + AAAA lookup ends at once with the IPv4 answer.
    return build_answer(query, RCODE_OK, addresses if query.qtype == TYPE_A else [])


def serve(
    sock: socket.socket,
    lookup: Callable[[str], list[str] | None],
    lookup_srv: Callable[[str], list[tuple[str, int]] | None] = _no_srv,
) -> None:
    """Answer queries on a UDP socket until the process ends. One thread: each answer is a few µs."""
    while True:
        try:
            packet, peer = sock.recvfrom(MAX_PACKET)
        except InterruptedError:
            continue
        except OSError:
            if sock.fileno() == -1:
                return  # closed by its owner (tests); under systemd the socket lives as long as the process
            raise
        try:
            reply = answer(packet, lookup, lookup_srv)
        except Exception:  # one bad query or table must not stop the answers for every site
            log.exception("dns: cannot answer a query from %s", peer)
            continue
        if reply is None:
            log.debug("dns: dropped a malformed packet from %s", peer)
            continue
        try:
            sock.sendto(reply, peer)
        except OSError as err:
            log.debug("dns: cannot answer %s: %s", peer, err)


def systemd_socket() -> socket.socket | None:
    """The datagram socket systemd passed (zdd-dns.socket), if any: it outlives restarts of zdd dns,
    so Caddy's lookups wait for the new process instead of being refused."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or not os.environ.get("LISTEN_FDS", "0").isdigit():
        return None
    if int(os.environ["LISTEN_FDS"]) < 1:
        return None
    return socket.socket(fileno=3)  # the first one: zdd-dns.socket's ListenDatagram


def bind(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host.strip("[]"), int(port)))
    return sock


def _ask(address: str, name: str, qtype: int, timeout: float) -> tuple[bytes, int]:
    """Send one query to the responder at HOST:PORT; the reply and the length of its question's name."""
    host, _, port = address.rpartition(":")
    ident = secrets.randbits(16)
    question = encode_name(name)
    packet = _HEADER.pack(ident, _RD, 1, 0, 0, 0) + question + struct.pack(">HH", qtype, CLASS_IN)
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host.strip("[]"), int(port)))
        sock.send(packet)
        while True:
            reply = sock.recv(65535)
            if len(reply) >= _HEADER.size and _HEADER.unpack_from(reply)[0] == ident:
                return reply, len(question)


def resolve(address: str, name: str, timeout: float = 1.0) -> list[str] | None:
    """Ask the responder at HOST:PORT for NAME's A records, as Caddy will. None: no such name.

    Raises OSError (TimeoutError included) when nothing answers."""
    reply, question_length = _ask(address, name, TYPE_A, timeout)
    try:
        return _addresses(reply, question_length)
    except (struct.error, ValueError) as err:
        raise OSError(f"not an answer zdd dns gives ({err})") from err


def resolve_srv(address: str, name: str, timeout: float = 1.0) -> list[tuple[str, int]] | None:
    """Ask the responder for NAME's SRV records, as Caddy will: (target, port) each. None: no such name."""
    reply, question_length = _ask(address, name, TYPE_SRV, timeout)
    try:
        return _srv_records(reply, question_length)
    except (struct.error, ValueError, IndexError, UnicodeDecodeError) as err:
        raise OSError(f"not an answer zdd dns gives ({err})") from err


def _records(reply: bytes, question_length: int) -> list[tuple[int, bytes]] | None:
    """The answer records (type, data) of one of our own replies (the question as sent, then records
    named by pointer); None for NXDOMAIN."""
    _ident, flags, _qd, ancount, _ns, _ar = _HEADER.unpack_from(reply)
    if flags & 0xF == RCODE_NXDOMAIN:
        return None
    if flags & 0xF != RCODE_OK:
        raise ValueError(f"rcode {flags & 0xF}")
    offset = _HEADER.size + question_length + 4
    records = []
    for _ in range(ancount):
        rtype, _class, _ttl, length = struct.unpack_from(">HHIH", reply, offset + 2)
        records.append((rtype, reply[offset + 12 : offset + 12 + length]))
        offset += 12 + length
    return records


def _srv_records(reply: bytes, question_length: int) -> list[tuple[str, int]] | None:
    records = _records(reply, question_length)
    if records is None:
        return None
    found = []
    for rdata in (data for rtype, data in records if rtype == TYPE_SRV):
        labels, at = [], 6
        while rdata[at]:
            if rdata[at] > 63:  # a compression pointer: not what zdd dns sends
                raise ValueError("a compressed SRV target")
            labels.append(rdata[at + 1 : at + 1 + rdata[at]].decode("ascii"))
            at += 1 + rdata[at]
        found.append((".".join(labels) + ".", struct.unpack_from(">H", rdata, 4)[0]))
    return found


def _addresses(reply: bytes, question_length: int) -> list[str] | None:
    records = _records(reply, question_length)
    if records is None:
        return None
    return [str(ipaddress.IPv4Address(data)) for rtype, data in records if rtype == TYPE_A and len(data) == 4]
