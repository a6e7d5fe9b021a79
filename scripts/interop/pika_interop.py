#!/usr/bin/env python3
"""The Python side of the interop tests, written with pika (the reference Python client).

  pika_interop.py consume URL QUEUE   read one message, print it as JSON (types tagged)
  pika_interop.py publish URL QUEUE   publish one message with headers of every type pika writes
  pika_interop.py publish-deep URL QUEUE
                                      publish a message whose headers nest 150 deep, then "after"
  pika_interop.py publish-traced URL QUEUE
                                      publish a message with W3C traceparent and tracestate headers

Used by Tests/CoreIntegrationTests/InteropTests.swift and TracingTests.swift; runnable by hand against any broker.
"""
import base64
import datetime
import decimal
import json
import sys

import pika


def tagged(value):
    """A JSON form of a decoded header value that keeps its Python type."""
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if isinstance(value, str):
        return {"str": value}
    if isinstance(value, bytes):
        return {"bytes": base64.b64encode(value).decode()}
    if isinstance(value, datetime.datetime):
        return {"timestamp": int(value.timestamp())}
    if isinstance(value, dict):
        return {"table": {k: tagged(v) for k, v in value.items()}}
    if isinstance(value, list):
        return {"array": [tagged(v) for v in value]}
    if value is None:
        return {"void": None}
    return {"other": repr(value)}


def consume(url, queue):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    for method, properties, body in channel.consume(queue, inactivity_timeout=30):
        if method is None:
            sys.exit("no message within 30 s")
        channel.basic_ack(method.delivery_tag)
        p = properties
        print(json.dumps({
            "body": body.decode("utf-8", "replace"),
            "routing_key": method.routing_key,
            "content_type": p.content_type,
            "content_encoding": p.content_encoding,
            "delivery_mode": p.delivery_mode,
            "priority": p.priority,
            "correlation_id": p.correlation_id,
            "reply_to": p.reply_to,
            "expiration": p.expiration,
            "message_id": p.message_id,
            "timestamp": p.timestamp,
            "type": p.type,
            "user_id": p.user_id,
            "app_id": p.app_id,
            "headers": {k: tagged(v) for k, v in (p.headers or {}).items()},
        }, sort_keys=True))
        break
    channel.cancel()
    connection.close()


def publish(url, queue):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    headers = {
        "str": "héllo ✓",
        "bytes": b"\x00\x01\xfe\xff",
        "true": True,
        "false": False,
        "small": 42,
        "negative": -7,
        "big": 2**40 + 3,
        "decimal": decimal.Decimal("12.34"),
        "timestamp": datetime.datetime(2024, 5, 17, 12, 30, 0, tzinfo=datetime.timezone.utc),
        "table": {"nested": {"deeper": [1, "two", None]}, "flag": True},
        "array": [1, "x", b"\x07", [False]],
        "void": None,
    }
    properties = pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8", headers=headers,
        delivery_mode=2, priority=4, correlation_id="py-corr", reply_to="py-replies",
        expiration="60000", message_id="py-1", timestamp=1700000456, type="py.event",
        user_id="guest", app_id="pika")
    channel.basic_publish("", queue, b'{"from": "pika"}', properties, mandatory=True)
    connection.close()


def publish_deep(url, queue):
    """A message whose headers nest 150 tables deep, then a plain one."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    deep = {"leaf": 1}
    for _ in range(150):
        deep = {"t": deep}
    channel.basic_publish("", queue, b"deep", pika.BasicProperties(headers={"deep": deep}), mandatory=True)
    channel.basic_publish("", queue, b"after", pika.BasicProperties(), mandatory=True)
    connection.close()


def publish_traced(url, queue):
    """A message carrying W3C Trace Context headers, as OpenTelemetry's instrumentation writes them."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    headers = {
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "rojo=00f067aa0ba902b7",
    }
    channel.basic_publish("", queue, b"traced", pika.BasicProperties(headers=headers), mandatory=True)
    connection.close()


if __name__ == "__main__":
    commands = {"consume": consume, "publish": publish, "publish-deep": publish_deep, "publish-traced": publish_traced}
    if len(sys.argv) != 4 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2], sys.argv[3])
