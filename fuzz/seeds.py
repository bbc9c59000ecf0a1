#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (standard library only).

    python3 fuzz/seeds.py          # hand-built seeds, plus real bytes from a local RabbitMQ
    python3 fuzz/seeds.py --offline  # hand-built seeds only

Hand-built: a heartbeat, a basic.deliver + header + body triple, a table with every RabbitMQ
type letter (t b B s u I i l f d D S A T F V x), and a few methods. Live: a short session with
the broker at 127.0.0.1:5672 (guest/guest) over a raw socket -- handshake, declare, publish,
get, consume, return, a channel error, close -- recording the bytes the server sent. Files are
named `<what>-<sha1 prefix>`; running the script again replaces its own seeds.
"""

import hashlib
import socket
import struct
import sys
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
TARGETS = ["frame_decode", "method_decode", "field_table", "chunked_feed", "roundtrip"]


# --- encoding -------------------------------------------------------------------------------
def short(s):
    s = s.encode() if isinstance(s, str) else s
    return bytes([len(s)]) + s


def long(b):
    b = b.encode() if isinstance(b, str) else b
    return struct.pack(">I", len(b)) + b


def raw_table(entries):
    """Entries (key, encoded value) without the length prefix: what FieldTable::from_raw takes."""
    return b"".join(short(k) + v for k, v in entries)


def table(entries):
    return long(raw_table(entries))


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def method(channel, cls, mid, args=b""):
    return frame(1, channel, struct.pack(">HH", cls, mid) + args)


def header(channel, size, flags=0, props=b""):
    return frame(2, channel, struct.pack(">HHQH", 60, 0, size, flags) + props)


def body(channel, data):
    return frame(3, channel, data)


HEARTBEAT = frame(8, 0, b"")
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

EVERY_TYPE = [
    ("bool", b"t\x01"),
    ("i8", b"b" + struct.pack(">b", -5)),
    ("u8", b"B\xc8"),
    ("i16", b"s" + struct.pack(">h", -300)),
    ("u16", b"u" + struct.pack(">H", 60000)),
    ("i32", b"I" + struct.pack(">i", -70000)),
    ("u32", b"i" + struct.pack(">I", 4000000000)),
    ("i64", b"l" + struct.pack(">q", -(2**40))),
    ("f32", b"f" + struct.pack(">f", 1.5)),
    ("f64", b"d" + struct.pack(">d", -2.25)),
    ("decimal", b"D\x02" + struct.pack(">I", 12345)),
    ("longstr", b"S" + long("hello")),
    ("array", b"A" + long(b"I" + struct.pack(">i", 1) + b"S" + long("x") + b"V")),
    ("timestamp", b"T" + struct.pack(">Q", 1700000000)),
    ("table", b"F" + table([("k", b"S" + long("v"))])),
    ("void", b"V"),
    ("bytes", b"x" + long(b"\x00\xff")),
]
# What RabbitMQ puts in a dead-lettered message's headers: an array of tables.
X_DEATH = [
    (
        "x-death",
        b"A"
        + long(
            b"F"
            + table(
                [
                    ("count", b"l" + struct.pack(">q", 1)),
                    ("reason", b"S" + long("expired")),
                    ("queue", b"S" + long("work")),
                    ("time", b"T" + struct.pack(">Q", 1700000000)),
                    ("routing-keys", b"A" + long(b"S" + long("work"))),
                ]
            )
        ),
    )
]

# basic.deliver: consumer-tag, delivery-tag, redelivered (bit), exchange, routing-key.
DELIVER = method(1, 60, 60, short("ctag-1") + struct.pack(">Q", 7) + b"\x01" + short("") + short("jobs"))
# Header flags: content-type, headers, delivery-mode, correlation-id, timestamp.
DELIVER_HEADER = header(
    1,
    5,
    0x8000 | 0x2000 | 0x1000 | 0x0400 | 0x0040,
    short("text/plain") + table(EVERY_TYPE) + b"\x02" + short("corr-1") + struct.pack(">Q", 1700000000),
)
DELIVERY = DELIVER + DELIVER_HEADER + body(1, b"hello")

HAND_METHODS = [
    # connection.tune: channel-max, frame-max, heartbeat
    method(0, 10, 30, struct.pack(">HIH", 0, 0, 60)),
    # queue.declare with every type in its arguments, bits durable + no-wait
    method(1, 50, 10, struct.pack(">H", 0) + short("work") + b"\x12" + table(EVERY_TYPE)),
    # basic.nack: delivery-tag, multiple + requeue
    method(1, 60, 120, struct.pack(">Q", 99) + b"\x03"),
    # basic.publish: reserved, exchange, routing-key, mandatory
    method(1, 60, 40, struct.pack(">H", 0) + short("") + short("work") + b"\x01"),
    # channel.close: reply-code, reply-text, class-id, method-id
    method(1, 20, 40, struct.pack(">H", 404) + short("NOT_FOUND - no queue 'x'") + struct.pack(">HH", 50, 10)),
]


# --- live capture ---------------------------------------------------------------------------
class Session:
    def __init__(self, addr=("127.0.0.1", 5672)):
        self.sock = socket.create_connection(addr, timeout=5)
        self.buf = b""
        self.received = b""  # every byte the server sent, in order
        self.frames = []  # each server frame on its own

    def send(self, data):
        self.sock.sendall(data)

    def frame(self):
        while len(self.buf) < 7 or len(self.buf) < 8 + struct.unpack(">I", self.buf[3:7])[0]:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
            self.received += chunk
        n = 8 + struct.unpack(">I", self.buf[3:7])[0]
        f, self.buf = self.buf[:n], self.buf[n:]
        self.frames.append(f)
        return f

    def until(self, cls, mid):
        """Reads frames up to and including the method cls.mid; returns that frame."""
        while True:
            f = self.frame()
            if f[0] == 1 and struct.unpack(">HH", f[7:11]) == (cls, mid):
                return f

    def content(self):
        """Reads a header frame and the body frames it announces."""
        h = self.frame()
        size = struct.unpack(">Q", h[11:19])[0]
        got = 0
        while got < size:
            got += len(self.frame()) - 8


def capture():
    s = Session()
    s.send(PROTOCOL_HEADER)
    start = s.until(10, 10)
    server_properties = start[7 + 4 + 2 + 4 : 7 + 4 + 2 + 4 + struct.unpack(">I", start[13:17])[0]]
    client_props = table([("product", b"S" + long("seeds.py")), ("capabilities", b"F" + table([("publisher_confirms", b"t\x01")]))])
    s.send(method(0, 10, 11, client_props + short("PLAIN") + long(b"\0guest\0guest") + short("en_US")))
    s.until(10, 30)
    s.send(method(0, 10, 31, struct.pack(">HIH", 2047, 4096, 0)))  # small frame-max: split bodies
    s.send(method(0, 10, 40, short("/") + short("") + b"\x00"))
    s.until(10, 41)
    s.send(method(1, 20, 10, short("")))
    s.until(20, 11)
    s.send(method(1, 85, 10, b"\x00"))  # confirm.select
    s.until(85, 11)
    s.send(method(1, 60, 10, struct.pack(">IHB", 0, 10, 0)))  # basic.qos prefetch 10
    s.until(60, 11)
    # queue.declare "" exclusive + auto-delete, with arguments
    s.send(method(1, 50, 10, struct.pack(">H", 0) + short("") + b"\x0c" + table([("x-message-ttl", b"I" + struct.pack(">i", 60000))])))
    declare_ok = s.until(50, 11)
    queue = declare_ok[12 : 12 + declare_ok[11]]
    props = short("application/json") + table(EVERY_TYPE + X_DEATH) + b"\x02" + short("corr-9") + struct.pack(">Q", 1700000000)
    flags = 0x8000 | 0x2000 | 0x1000 | 0x0400 | 0x0040
    for payload in (b'{"n":1}', bytes(range(256)) * 20):  # one body frame, then two
        s.send(method(1, 60, 40, struct.pack(">H", 0) + short("") + short(queue) + b"\x00"))
        s.send(header(1, len(payload), flags, props))
        for i in range(0, len(payload), 4088):
            s.send(body(1, payload[i : i + 4088]))
        s.until(60, 80)  # basic.ack (publisher confirm)
    s.send(method(1, 60, 70, struct.pack(">H", 0) + short(queue) + b"\x01"))  # basic.get no-ack
    s.until(60, 71)
    s.content()
    s.send(method(1, 60, 20, struct.pack(">H", 0) + short(queue) + short("ctag") + b"\x02" + table([])))
    s.until(60, 21)
    s.until(60, 60)  # basic.deliver
    s.content()
    # mandatory publish that no queue takes: basic.return + content
    s.send(method(1, 60, 40, struct.pack(">H", 0) + short("") + short("nowhere") + b"\x01"))
    s.send(header(1, 3, 0x1000, b"\x01"))
    s.send(body(1, b"bye"))
    s.until(60, 50)
    s.content()
    s.until(60, 80)
    # passive declare of a queue that does not exist: the server closes the channel (404)
    s.send(method(1, 50, 10, struct.pack(">H", 0) + short("no-such-queue") + b"\x01" + table([])))
    s.until(20, 40)
    s.send(method(1, 20, 41))
    s.send(method(0, 10, 50, struct.pack(">H", 200) + short("bye") + struct.pack(">HH", 0, 0)))
    s.until(10, 51)
    s.sock.close()
    return s.received, s.frames, server_properties


# --- writing --------------------------------------------------------------------------------
def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob(f"{name}-*"):  # a seed regenerated replaces its previous version
        old.unlink()
    (d / f"{name}-{hashlib.sha1(data).hexdigest()[:12]}").write_bytes(data)


def streams(name, data):
    """A frame stream goes to every target that takes streams."""
    write("frame_decode", name, data)
    write("roundtrip", name, data)
    # chunk sizes: byte by byte; 1, 7, 100 in turn; 13 at a time
    for split, prefix in (("bytewise", b"\x00"), ("mixed", b"\x03\x01\x07\x64"), ("by13", b"\x01\x0d")):
        write("chunked_feed", f"{name}-{split}", prefix + data)


def methods(name, frames):
    for i, f in enumerate(frames):
        if f[0] == 1:
            write("method_decode", f"{name}{i:02}", f[7:-1])


def main():
    streams("heartbeat", HEARTBEAT)
    streams("protocol-header", PROTOCOL_HEADER + HEARTBEAT)
    streams("deliver-triple", DELIVERY)
    streams("handmade-methods", b"".join(HAND_METHODS))
    methods("handmade", HAND_METHODS + [DELIVER])
    write("field_table", "every-type", raw_table(EVERY_TYPE))
    write("field_table", "x-death", raw_table(X_DEATH))
    write("field_table", "array", b"I\x00\x00\x00\x01S\x00\x00\x00\x01xV")
    write("field_table", "empty", b"")
    if "--offline" in sys.argv:
        return
    received, frames, server_properties = capture()
    streams("rabbitmq-session", received)
    for i, f in enumerate(frames):
        if f[0] in (2, 3) or (f[0] == 1 and f[7:9] in (b"\x00\x0a", b"\x00\x3c")):
            streams(f"rabbitmq-frame{i:02}", f)  # connection.start, deliver, headers, bodies
    methods("rabbitmq", frames)
    write("field_table", "server-properties", server_properties)
    print(f"captured {len(received)} bytes in {len(frames)} frames from 127.0.0.1:5672")


if __name__ == "__main__":
    main()
