#!/usr/bin/env python3
"""Writes the seed corpus of rabbitmq-fuzz (Tests/FuzzCorpus/) from AMQP 0-9-1 values
shaped like those RabbitMQ really sends and clients really publish: server properties,
x-death headers, queue arguments, content headers, deliveries, closes, undersized and
wrongly classed frames. The first byte of each file picks the fuzz target's path (see
Sources/rabbitmq-fuzz/FuzzTarget.swift). Usage: scripts/fuzz-corpus.py [DIR]"""
import os
import struct
import sys


def shortstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">B", len(b)) + b


def longstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def value(v):
    if isinstance(v, bool):
        return b"t" + struct.pack(">B", v)
    if isinstance(v, int):
        return b"l" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"d" + struct.pack(">d", v)
    if isinstance(v, (str, bytes)):
        return b"S" + longstr(v)
    if isinstance(v, dict):
        return b"F" + table(v)
    if isinstance(v, list):
        return b"A" + array(v)
    if isinstance(v, tuple):  # (kind, raw bytes)
        return v[0].encode() + v[1]
    if v is None:
        return b"V"
    raise TypeError(v)


def table(d):
    body = b"".join(shortstr(k) + value(v) for k, v in d.items())
    return struct.pack(">I", len(body)) + body


def array(values):
    body = b"".join(value(v) for v in values)
    return struct.pack(">I", len(body)) + body


def properties(flags, fields):
    return struct.pack(">H", flags) + fields


def frame(kind, channel, payload, size=None):
    return struct.pack(">BHI", kind, channel, len(payload) if size is None else size) + payload + b"\xce"


def method(class_id, method_id, args):
    return struct.pack(">HH", class_id, method_id) + args


SERVER_PROPERTIES = {
    "capabilities": {
        "publisher_confirms": True, "exchange_exchange_bindings": True, "basic.nack": True,
        "consumer_cancel_notify": True, "connection.blocked": True, "consumer_priorities": True,
        "authentication_failure_close": True, "per_consumer_qos": True, "direct_reply_to": True,
    },
    "cluster_name": "rabbit@localhost", "copyright": "Copyright (c) 2007-2022 VMware, Inc. or its affiliates.",
    "information": "Licensed under the MPL 2.0. Website: https://rabbitmq.com",
    "platform": "Erlang/OTP 25.2.3", "product": "RabbitMQ", "version": "3.10.8",
}
X_DEATH = {
    "x-death": [{
        "count": 3, "reason": "rejected", "queue": "orders", "time": ("T", struct.pack(">Q", 1765000000)),
        "exchange": "", "routing-keys": ["orders"],
    }],
    "x-first-death-exchange": "", "x-first-death-queue": "orders", "x-first-death-reason": "rejected",
}
QUEUE_ARGUMENTS = {"x-queue-type": "quorum", "x-max-length": 10000, "x-overflow": "reject-publish",
                   "x-dead-letter-exchange": "dlx", "x-message-ttl": 60000}
EVERY_KIND = {
    "t": True, "b": ("b", b"\x80"), "B": ("B", b"\xff"), "s": ("s", b"\x80\x00"), "u": ("u", b"\xff\xff"),
    "I": ("I", b"\x80\x00\x00\x00"), "i": ("i", b"\xff\xff\xff\xff"), "l": -1, "L": ("L", b"\xff" * 8),
    "f": ("f", struct.pack(">f", 1.5)), "d": 2.25, "D": ("D", b"\x02\x00\x00\x04\xd2"), "S": "text",
    "x": ("x", longstr(b"\x00\xff\xfe")), "T": ("T", struct.pack(">Q", 1)), "V": None, "A": [1, "a", [], {}],
    "F": {"nested": {"deeper": [True]}}, "nan": ("d", b"\x7f\xf8" + b"\x00" * 6), "not utf8": b"\xc3\x28\xff",
}

# Basic properties: content-type, headers, delivery-mode, priority, correlation-id,
# reply-to, message-id, timestamp (flags 0x8000 0x2000 0x1000 0x0800 0x0400 0x0200 0x0080 0x0040).
PROPS_RPC = properties(
    0x8000 | 0x2000 | 0x1000 | 0x0800 | 0x0400 | 0x0200 | 0x0080 | 0x0040,
    shortstr("application/json") + table({"x-retry-count": 2, "source": "billing"}) + b"\x02" + b"\x05"
    + shortstr("c0ffee") + shortstr("amq.rabbitmq.reply-to.g1h2AA==") + shortstr("m-1") + struct.pack(">Q", 1765000000))
PROPS_ALL = properties(
    0xFFFC,
    shortstr("text/plain") + shortstr("gzip") + table(EVERY_KIND) + b"\x01" + b"\x09" + shortstr("corr")
    + shortstr("reply") + shortstr("60000") + shortstr("id") + struct.pack(">Q", 0) + shortstr("type")
    + shortstr("guest") + shortstr("app") + shortstr("cluster"))
PROPS_DEAD = properties(0x2000 | 0x1000, table(X_DEATH) + b"\x02")

DELIVER = frame(1, 1, method(60, 60, shortstr("ctag-1") + struct.pack(">Q", 1) + b"\x00" + shortstr("") + shortstr("orders")))


def header(props, body_size, class_id=60, channel=1):
    return frame(2, channel, struct.pack(">HHQ", class_id, 0, body_size) + props)


SEEDS = {
    # path 0: tables
    "table-server-properties": b"\x00" + table(SERVER_PROPERTIES),
    "table-x-death": b"\x00" + table(X_DEATH),
    "table-queue-arguments": b"\x00" + table(QUEUE_ARGUMENTS),
    "table-every-kind": b"\x00" + table(EVERY_KIND),
    "table-empty": b"\x00" + table({}),
    "table-length-past-end": b"\x00" + struct.pack(">I", 0xFFFFFFF0) + shortstr("k") + value(1),
    "table-duplicate-keys": b"\x00" + struct.pack(">I", 20) + shortstr("k") + value(1) + shortstr("k") + value(2),
    "table-deep-arrays": b"\x00" + struct.pack(">I", 5 * 120 + 3) + shortstr("a") + b"".join(
        b"A" + struct.pack(">I", 5 * (119 - i)) for i in range(120)),
    # path 1: properties
    "props-rpc": b"\x01" + PROPS_RPC,
    "props-all": b"\x01" + PROPS_ALL,
    "props-x-death": b"\x01" + PROPS_DEAD,
    "props-none": b"\x01" + properties(0, b""),
    "props-continued-flags": b"\x01" + properties(0x8001, b"") + struct.pack(">H", 0x8001) + struct.pack(">H", 0) + shortstr("x"),
    "props-truncated": b"\x01" + properties(0x8000 | 0x2000, shortstr("text/plain") + struct.pack(">I", 50)),
    # path 2: frames from a broker (the byte after the selector sets the read size)
    "frames-deliver": b"\x02\xff" + DELIVER + header(PROPS_RPC, 5) + frame(3, 1, b"hello"),
    "frames-deliver-small-reads": b"\x02\x02" + DELIVER + header(PROPS_DEAD, 3) + frame(3, 1, b"abc"),
    "frames-protocol-header": b"\x02\xff" + b"AMQP\x00\x00\x09\x01",
    "frames-connection-start": b"\x02\xff" + frame(1, 0, method(10, 10, b"\x00\x09" + table(SERVER_PROPERTIES)
                                                             + longstr("PLAIN AMQPLAIN") + longstr("en_US"))),
    "frames-tune-tiny-frame-max": b"\x02\xff" + frame(1, 0, method(10, 30, struct.pack(">HIH", 2047, 100, 60))),
    "frames-connection-close": b"\x02\xff" + frame(1, 0, method(10, 50, struct.pack(">H", 320) + shortstr("CONNECTION_FORCED - shutdown") + struct.pack(">HH", 0, 0))),
    "frames-channel-close": b"\x02\xff" + frame(1, 1, method(20, 40, struct.pack(">H", 404) + shortstr("NOT_FOUND - no queue 'q'") + struct.pack(">HH", 50, 10))),
    "frames-return": b"\x02\xff" + frame(1, 1, method(60, 50, struct.pack(">H", 312) + shortstr("NO_ROUTE") + shortstr("x") + shortstr("k")))
    + header(PROPS_RPC, 0),
    "frames-get-ok": b"\x02\xff" + frame(1, 1, method(60, 71, struct.pack(">QB", 7, 0) + shortstr("") + shortstr("q") + struct.pack(">I", 3)))
    + header(properties(0, b""), 0),
    "frames-acks": b"\x02\xff" + frame(1, 1, method(60, 80, struct.pack(">QB", 5, 1))) + frame(1, 1, method(60, 120, struct.pack(">QBB", 6, 0, 1))),
    "frames-heartbeat": b"\x02\xff" + frame(8, 0, b""),
    "frames-blocked": b"\x02\xff" + frame(1, 0, method(10, 60, shortstr("low on memory"))) + frame(1, 0, method(10, 61, b"")),
    "frames-undersized-method": b"\x02\xff" + frame(1, 0, b"\x00\x0a"),
    "frames-undersized-header": b"\x02\xff" + DELIVER + frame(2, 1, b"\x00\x3c"),
    "frames-header-wrong-class": b"\x02\xff" + DELIVER + header(properties(0x8000, shortstr("text/plain")), 0, class_id=10),
    "frames-header-huge-body": b"\x02\xff" + DELIVER + header(properties(0, b""), 0xFFFFFFFFFFFFFFFF),
    "frames-oversized": b"\x02\xff" + frame(1, 0, b"", size=0x7FFFFFFF),
    "frames-unknown-method": b"\x02\xff" + frame(1, 0, method(99, 99, b"")),
    "frames-bad-end": b"\x02\xff" + frame(1, 0, method(10, 61, b""))[:-1] + b"\x00",
}

# path 3: Swift tables built from the bytes (see FuzzInput.table); path 4: publishes.
SEEDS["swift-table-small"] = b"\x03\x03" + b"\x00\x01k\x07" + b"\x00" * 7 + b"\x00\x02ab\x0b\x00\x03xyz" + b"\x00\x00\x0e"
SEEDS["swift-table-tower"] = b"\x03\x01\x00\x01t\x11\x6e"
SEEDS["swift-table-floats"] = b"\x03\x02\x00\x01f\x08\x7f\xc0\x00\x01\x00\x01d\x09\xff\xf8\x00\x00\x00\x00\x00\x01"
SEEDS["publish-small"] = b"\x04\x00\x00" + b"\x01\x00\x00\x0atext/plain" + b"\x00" * 30 + b"\x00\x05hello"
SEEDS["publish-mandatory-headers"] = b"\x04\x01\x01" + b"\x00\x01\x02\x00\x01a\x07" + b"\x01" * 8 + b"\x00" * 30 + b"\x10\x00" + b"b" * 64
SEEDS["publish-large-body"] = b"\x04\x00\x00" + b"\x00" * 24 + b"\x2e\xe0" + bytes(range(256)) * 47

# path 5: requests (frame_max choice, kind, three names, an arguments table).
SEEDS["request-queue-declare-quorum"] = (b"\x05\x00\x02" + b"\x00\x00\x06orders" + b"\x00\x00\x00" * 2 + b"\x02"
                                         + b"\x00\x00\x0cx-queue-type\x0b\x00\x06quorum"
                                         + b"\x00\x00\x0cx-max-length\x07" + struct.pack(">q", 10000))
SEEDS["request-exchange-bind-headers"] = (b"\x05\x01\x01" + b"\x00\x00\x01d" + b"\x00\x00\x01s" + b"\x00\x00\x03k.#" + b"\x02"
                                          + b"\x00\x00\x07x-match\x0b\x00\x03all" + b"\x00\x00\x06format\x0b\x00\x04json")


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "Tests", "FuzzCorpus")
    os.makedirs(directory, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
    print(f"{len(SEEDS)} seeds in {directory}")


if __name__ == "__main__":
    main()
