"""zdd dns: the wire format Go's resolver speaks, the route table's names, and a real UDP round trip."""

import socket
import struct
import threading

import pytest

from zdd import dns
from zdd.routes import LiveRoutes, RouteFile, RouteTable, node_host, node_name, srv_name, upstream_name

TABLE = RouteTable(
    "ab12cd34",
    {
        "web": [["172.20.0.6:8080"], ["172.20.0.5:8080"]],  # new first, old draining
        "api": [["172.20.0.9:9090"], ["172.20.0.7:8000"]],  # a port change: each name its own port
        # replicas: two new containers, two old ones draining
        "shop": [["172.20.0.11:3000", "172.20.0.12:3000"], ["172.20.0.3:3000", "172.20.0.4:3000"]],
        # on a Swarm: green's tasks on two nodes (port 18302), blue's draining (18301)
        "cart": [["10.216.0.12:18302", "10.216.0.13:18302"], ["10.216.0.11:18301", "10.216.0.12:18301"]],
    },
)


def query(name: str, qtype: int = dns.TYPE_A, qclass: int = dns.CLASS_IN, flags: int = 0x0100, ident=0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    return struct.pack(">HHHHHH", ident, flags, 1, 0, 0, 0) + labels + struct.pack(">HH", qtype, qclass)


def header(packet: bytes) -> dict[str, int]:
    ident, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", packet[:12])
    return {
        "id": ident,
        "qr": flags >> 15,
        "aa": (flags >> 10) & 1,
        "rd": (flags >> 8) & 1,
        "rcode": flags & 0xF,
        "qd": qd,
        "an": an,
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("web.p8080.ab12cd34.zdd.internal.", ["172.20.0.6"]),  # the first address of the port only
        ("WEB.P8080.AB12CD34.ZDD.INTERNAL.", ["172.20.0.6"]),  # DNS names are case-insensitive
        ("api.p9090.ab12cd34.zdd.internal.", ["172.20.0.9"]),
        ("api.p8000.ab12cd34.zdd.internal.", ["172.20.0.7"]),  # the old config's name, while it drains
        ("shop.p3000.ab12cd34.zdd.internal.", ["172.20.0.11", "172.20.0.12"]),  # every replica of the first set
        ("web.p9090.ab12cd34.zdd.internal.", None),  # no address on that port
        ("web.p8080.otherone.zdd.internal.", None),  # another agent's name
        ("web.p8080.ab12cd34.zdd.example.", None),
        ("db.p5432.ab12cd34.zdd.internal.", None),
        ("web.8080.ab12cd34.zdd.internal.", None),
        ("zdd.internal.", None),
        ("ip-10-216-0-12.ab12cd34.zdd.internal.", ["10.216.0.12"]),  # an SRV target: a routed node
        ("ip-10-216-0-11.ab12cd34.zdd.internal.", ["10.216.0.11"]),  # draining tasks' node too
        ("ip-10-216-0-99.ab12cd34.zdd.internal.", ["10.216.0.99"]),  # no route has it (any more): all the same
        ("ip-10-216-0-12.otherone.zdd.internal.", None),
        ("ip-10-216-0.ab12cd34.zdd.internal.", None),
        ("ip-10-216-0-999.ab12cd34.zdd.internal.", None),
        ("cart.srv.ab12cd34.zdd.internal.", None),  # an SRV name has no A records
    ],
)
def test_route_table_lookup(name, expected):
    assert TABLE.lookup(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (  # the first set, each task with its node's name and its own port
            "cart.srv.ab12cd34.zdd.internal.",
            [("ip-10-216-0-12.ab12cd34.zdd.internal.", 18302), ("ip-10-216-0-13.ab12cd34.zdd.internal.", 18302)],
        ),
        (
            "CART.SRV.AB12CD34.ZDD.INTERNAL.",
            [("ip-10-216-0-12.ab12cd34.zdd.internal.", 18302), ("ip-10-216-0-13.ab12cd34.zdd.internal.", 18302)],
        ),
        ("web.srv.ab12cd34.zdd.internal.", [("ip-172-20-0-6.ab12cd34.zdd.internal.", 8080)]),
        ("cart.srv.otherone.zdd.internal.", None),
        ("nothing.srv.ab12cd34.zdd.internal.", None),
        ("cart.p18302.ab12cd34.zdd.internal.", None),
    ],
)
def test_route_table_srv_lookup(name, expected):
    assert TABLE.lookup_srv(name) == expected


def test_node_names_round_trip():
    assert srv_name("cart", "ab12cd34") == "cart.srv.ab12cd34.zdd.internal."
    assert node_name("10.216.0.12", "ab12cd34") == "ip-10-216-0-12.ab12cd34.zdd.internal."
    assert node_host("ip-10-216-0-12.ab12cd34.zdd.internal.", "ab12cd34") == "10.216.0.12"
    assert node_host("IP-10-216-0-12.ab12cd34.zdd.internal", "ab12cd34") == "10.216.0.12"  # as Caddy may list it
    others = (
        "web.p8080.ab12cd34.zdd.internal.",
        "ip-1-2-3.ab12cd34.zdd.internal.",
        "ip-a-b-c-d.ab12cd34.zdd.internal.",
        "ip-10-216-0-12.otherone.zdd.internal.",  # another agent's
        "ip-172-18-0-5.eu-west-1.compute.internal",  # another site's upstream on the same Caddy
        "ip-10-216-0-12.x.ab12cd34.zdd.internal.",
    )
    assert [node_host(name, "ab12cd34") for name in others] == [None] * len(others)


def test_srv_answers_what_go_asks():
    srv = dns.answer(query("cart.srv.ab12cd34.zdd.internal.", qtype=dns.TYPE_SRV), TABLE.lookup, TABLE.lookup_srv)
    assert (header(srv)["rcode"], header(srv)["an"], header(srv)["aa"]) == (dns.RCODE_OK, 2, 1)
    # priority 0, weight 1, port, then the target uncompressed (RFC 2782)
    target = b"\x0eip-10-216-0-12\x08ab12cd34\x03zdd\x08internal\x00"
    assert struct.pack(">HHH", 0, 1, 18302) + target in srv
    a = dns.answer(query("cart.srv.ab12cd34.zdd.internal."), TABLE.lookup, TABLE.lookup_srv)
    assert (header(a)["rcode"], header(a)["an"]) == (dns.RCODE_OK, 0)  # the name exists: no data, not NXDOMAIN
    node = dns.answer(query("ip-10-216-0-13.ab12cd34.zdd.internal."), TABLE.lookup, TABLE.lookup_srv)
    assert (header(node)["an"], node[-4:]) == (1, socket.inet_aton("10.216.0.13"))
    missing = dns.answer(
        query("nothing.srv.ab12cd34.zdd.internal.", qtype=dns.TYPE_SRV), TABLE.lookup, TABLE.lookup_srv
    )
    assert header(missing)["rcode"] == dns.RCODE_NXDOMAIN
    # Go reads up to 1232 bytes over UDP: 16 tasks (MAX_REPLICAS) fit.
    many = RouteTable("ab12cd34", {"cart": [[f"10.216.0.{n}:18302" for n in range(100, 116)]]})
    reply = dns.answer(query("cart.srv.ab12cd34.zdd.internal.", qtype=dns.TYPE_SRV), many.lookup, many.lookup_srv)
    assert header(reply)["an"] == 16 and len(reply) < 1232


def test_upstream_name_round_trips_through_lookup():
    assert upstream_name("web", 8080, "ab12cd34") == "web.p8080.ab12cd34.zdd.internal."
    assert TABLE.names("api") == {
        "api.p9090.ab12cd34.zdd.internal.": ["172.20.0.9"],
        "api.p8000.ab12cd34.zdd.internal.": ["172.20.0.7"],
    }
    assert TABLE.with_route("web", []).apps.keys() == {"api", "shop", "cart"}


def test_the_routes_file_writes_a_set_of_one_as_before_replicas_and_reads_both(tmp_path):
    routes = RouteFile(tmp_path / "routes.toml")
    routes.save(TABLE)
    text = (tmp_path / "routes.toml").read_text()
    assert 'web = [\n    "172.20.0.6:8080",\n    "172.20.0.5:8080",\n]' in text  # as zdd 0.1 wrote it
    assert routes.load() == TABLE
    (tmp_path / "routes.toml").write_text(
        'instance = "ab12cd34"\n[apps]\nweb = ["172.20.0.6:8080", "172.20.0.5:8080"]\n'
    )
    assert routes.load().apps == {"web": [["172.20.0.6:8080"], ["172.20.0.5:8080"]]}


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        # (what comes in, (rcode, answer count)) ; None: dropped unanswered
        (query("web.p8080.ab12cd34.zdd.internal."), (dns.RCODE_OK, 1)),
        (query("web.p8080.ab12cd34.zdd.internal.", qtype=dns.TYPE_AAAA), (dns.RCODE_OK, 0)),  # no data
        (query("web.p8080.ab12cd34.zdd.internal.", qtype=16), (dns.RCODE_OK, 0)),  # TXT: no data
        (query("nothing.zdd.internal."), (dns.RCODE_NXDOMAIN, 0)),
        (query("web.p8080.ab12cd34.zdd.internal.", qclass=3), (dns.RCODE_NOTIMP, 0)),  # CHAOS
        (query("web.p8080.ab12cd34.zdd.internal.")[:-2], None),  # truncated question
        (query("web.p8080.ab12cd34.zdd.internal.", flags=0x8000), None),  # a response, not a query
        (query("web.p8080.ab12cd34.zdd.internal.", flags=0x2800), None),  # opcode UPDATE
        (b"\x12\x34\x01", None),  # shorter than a header
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01", None),  # a pointer
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ab", None),  # label runs past the end
        (b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01", None),  # two questions
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x02\xff\xfe\x00\x00\x01\x00\x01", None),  # not ASCII
    ],
)
def test_answers_what_go_asks_and_drops_the_rest(packet, expected):
    reply = dns.answer(packet, TABLE.lookup)
    if expected is None:
        assert reply is None
        return
    h = header(reply)
    assert (h["rcode"], h["an"]) == expected
    assert (h["id"], h["qr"], h["aa"], h["rd"], h["qd"]) == (0x1234, 1, 1, 1, 1)
    assert reply[12 : len(packet)] == packet[12:]  # the question, echoed


def test_a_query_with_an_edns0_record_is_answered():
    # Go 1.21+ adds an OPT record to every query; it must not make the query look malformed.
    opt = b"\x00" + struct.pack(">HHIH", 41, 1232, 0, 0)
    packet = bytearray(query("web.p8080.ab12cd34.zdd.internal.") + opt)
    packet[11] = 1  # ARCOUNT
    reply = dns.answer(bytes(packet), TABLE.lookup)
    assert header(reply)["an"] == 1
    assert reply.endswith(socket.inet_aton("172.20.0.6"))


@pytest.fixture
def responder(tmp_path):
    """zdd dns's loop on a real UDP socket, answering from a real routes.toml."""
    routes = RouteFile(tmp_path / "routes.toml")
    routes.save(TABLE)
    sock = dns.bind("127.0.0.1:0")
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    live = LiveRoutes(routes.path)
    threading.Thread(target=dns.serve, args=(sock, live.lookup, live.lookup_srv), daemon=True).start()
    yield address, routes
    sock.close()


def test_round_trip_and_a_switch_is_one_file_replace(responder):
    address, routes = responder
    assert dns.resolve(address, "web.p8080.ab12cd34.zdd.internal.") == ["172.20.0.6"]
    assert dns.resolve(address, "db.p1.ab12cd34.zdd.internal.") is None
    routes.save(TABLE.with_route("web", [["172.20.0.5:8080"]]))  # route back
    assert dns.resolve(address, "web.p8080.ab12cd34.zdd.internal.") == ["172.20.0.5"]


def test_srv_round_trip_and_a_switch_of_colour(responder):
    address, routes = responder
    name = "cart.srv.ab12cd34.zdd.internal."
    assert dns.resolve_srv(address, name) == [
        ("ip-10-216-0-12.ab12cd34.zdd.internal.", 18302),
        ("ip-10-216-0-13.ab12cd34.zdd.internal.", 18302),
    ]
    routes.save(TABLE.with_route("cart", [["10.216.0.11:18301"]]))  # back to blue, one task
    assert dns.resolve_srv(address, name) == [("ip-10-216-0-11.ab12cd34.zdd.internal.", 18301)]
    assert dns.resolve(address, "ip-10-216-0-11.ab12cd34.zdd.internal.") == ["10.216.0.11"]
    assert dns.resolve_srv(address, "nothing.srv.ab12cd34.zdd.internal.") is None


@pytest.mark.parametrize(
    "rdata",
    [
        b"\x00\x00\x00\x01\x1f\x90\xc0\x0c",  # a compressed target, as other servers may send
        b"\x00\x00\x00\x01\x1f\x90\x05ab",  # a label that runs past the end
    ],
)
def test_an_srv_answer_zdd_dns_would_not_give_is_refused(rdata):  # resolve_srv makes it an OSError
    question = dns.encode_name("cart.srv.ab12cd34.zdd.internal.")
    header = struct.pack(">HHHHHH", 1, 0x8580, 1, 1, 0, 0)
    record = b"\xc0\x0c" + struct.pack(">HHIH", dns.TYPE_SRV, 1, 1, len(rdata)) + rdata
    reply = header + question + struct.pack(">HH", dns.TYPE_SRV, 1) + record
    with pytest.raises((ValueError, IndexError)):
        dns._srv_records(reply, len(question))


def test_a_broken_routes_file_keeps_the_last_good_answer(responder, caplog):
    address, routes = responder
    assert dns.resolve(address, "web.p8080.ab12cd34.zdd.internal.") == ["172.20.0.6"]
    routes.path.write_text("this is [not toml")
    assert dns.resolve(address, "web.p8080.ab12cd34.zdd.internal.") == ["172.20.0.6"]
    assert "answering from the last good table" in caplog.text


def test_nothing_listening_is_an_oserror():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        dns.resolve(f"127.0.0.1:{port}", "web.p8080.ab12cd34.zdd.internal.", timeout=0.5)


def test_a_failing_lookup_costs_one_answer_not_the_responder(caplog):
    calls = []

    def lookup(name):
        calls.append(name)
        if len(calls) == 1:
            raise ValueError("a table zdd cannot read")
        return ["172.20.0.6"]

    sock = dns.bind("127.0.0.1:0")
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    threading.Thread(target=dns.serve, args=(sock, lookup), daemon=True).start()
    try:
        with pytest.raises(OSError):
            dns.resolve(address, "web.p8080.ab12cd34.zdd.internal.", timeout=0.5)
        assert dns.resolve(address, "web.p8080.ab12cd34.zdd.internal.") == ["172.20.0.6"]
        assert "cannot answer a query" in caplog.text
    finally:
        sock.close()


def test_a_routes_file_with_a_bad_address_keeps_the_last_good_table(tmp_path, caplog):
    routes = RouteFile(tmp_path / "routes.toml")
    routes.save(TABLE)
    live = LiveRoutes(routes.path)
    assert live.lookup("web.p8080.ab12cd34.zdd.internal.") == ["172.20.0.6"]
    routes.save(TABLE.with_route("web", [["not-an-ip:8080"]]))
    assert live.lookup("web.p8080.ab12cd34.zdd.internal.") == ["172.20.0.6"]
    assert "answering from the last good table" in caplog.text
