#!/usr/bin/env python3
"""The Python side of the patterns interop tests, written with pika.

  pika_patterns.py read-envelope URL QUEUE      read one message, check it is a valid envelope,
                                                print what was checked as JSON
  pika_patterns.py write-envelope URL QUEUE     publish an envelope the way a Python service would
  pika_patterns.py rpc-call URL QUEUE BODY      call an RPC server over direct reply-to, print the reply
  pika_patterns.py rpc-serve URL QUEUE COUNT    answer COUNT requests: the body upper-cased;
                                                for a body "fail" an error reply ({"error": ...,
                                                "success": false} with the header x-rpc-error);
                                                for "declined" the answer {"success": false, ...}

Used by Tests/PatternsIntegrationTests/PatternsInteropTests.swift; runnable by hand against any broker.
"""
import datetime
import json
import sys
import uuid

import pika

ENVELOPE_KEYS = ["data", "id", "metadata", "timestamp", "type", "version"]


def read_envelope(url, queue):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    for method, properties, body in channel.consume(queue, inactivity_timeout=30):
        if method is None:
            sys.exit("no message within 30 s")
        channel.basic_ack(method.delivery_tag)
        envelope = json.loads(body)
        problems = []
        if sorted(envelope) != ENVELOPE_KEYS:
            problems.append(f"keys are {sorted(envelope)}")
        if str(uuid.UUID(envelope["id"])) != envelope["id"]:
            problems.append("id is not a lowercase UUID")
        stamp = datetime.datetime.fromisoformat(envelope["timestamp"].replace("Z", "+00:00"))
        if stamp.utcoffset() != datetime.timedelta(0):
            problems.append("timestamp is not UTC")
        if not isinstance(envelope["version"], str):
            problems.append("version is not a string")
        if not isinstance(envelope["metadata"], dict) or not all(
                isinstance(v, str) for v in envelope["metadata"].values()):
            problems.append("metadata is not an object of strings")
        print(json.dumps({
            "problems": problems,
            "envelope": envelope,
            "timestamp_epoch": stamp.timestamp(),
            "content_type": properties.content_type,
            "delivery_mode": properties.delivery_mode,
            "message_id": properties.message_id,
            "type": properties.type,
            "timestamp": properties.timestamp,
            "correlation_id": properties.correlation_id,
            "app_id": properties.app_id,
            "headers": properties.headers or {},
        }, sort_keys=True))
        break
    channel.cancel()
    connection.close()


def write_envelope(url, queue):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    envelope_id = str(uuid.uuid4())
    envelope = {
        "id": envelope_id,
        # What Python services typically write: an offset, and microseconds.
        "timestamp": datetime.datetime(2024, 5, 17, 12, 30, 0, 123456, tzinfo=datetime.timezone.utc).isoformat(),
        "version": "2.0",
        "type": "billing.invoice.paid",
        "data": {"invoice": "INV-7", "cents": 1250, "lines": [{"sku": "A", "qty": 2}]},
        "metadata": {"source": "py-billing", "correlation_id": "py-corr", "user_id": "u-42", "region": "eu"},
    }
    properties = pika.BasicProperties(
        content_type="application/json", delivery_mode=2, message_id=envelope_id,
        type=envelope["type"], correlation_id="py-corr", app_id="py-billing")
    channel.basic_publish("", queue, json.dumps(envelope).encode(), properties, mandatory=True)
    connection.close()
    print(envelope_id)


def rpc_call(url, queue, body):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    replies = []
    correlation_id = str(uuid.uuid4())

    def on_reply(ch, method, properties, reply):
        if properties.correlation_id == correlation_id:
            replies.append(reply)

    channel.basic_consume("amq.rabbitmq.reply-to", on_reply, auto_ack=True)
    channel.basic_publish(
        "", queue, body.encode(),
        pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id=correlation_id,
                             content_type="text/plain", expiration="30000"))
    deadline = 30
    while not replies and deadline > 0:
        connection.process_data_events(time_limit=1)
        deadline -= 1
    connection.close()
    if not replies:
        sys.exit("no reply within 30 s")
    sys.stdout.write(replies[0].decode())


def rpc_serve(url, queue, count):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1)
    answered = 0
    for method, properties, body in channel.consume(queue, inactivity_timeout=30):
        if method is None:
            sys.exit("no request within 30 s")
        headers = None
        if body == b"fail":
            # An error reply as RabbitMQRPCServer sends one: the body and the marking header.
            reply = json.dumps({"error": "pika refuses", "success": False}).encode()
            headers = {"x-rpc-error": True}
        elif body == b"declined":
            # An answer that happens to say "success": false: a reply, not an error.
            reply = json.dumps({"success": False, "reason": "out of stock"}).encode()
        else:
            reply = body.upper()
        channel.basic_publish("", properties.reply_to, reply,
                              pika.BasicProperties(correlation_id=properties.correlation_id, headers=headers))
        channel.basic_ack(method.delivery_tag)
        answered += 1
        if answered == count:
            break
    channel.cancel()
    connection.close()


if __name__ == "__main__":
    commands = {
        "read-envelope": (read_envelope, 2), "write-envelope": (write_envelope, 2),
        "rpc-call": (rpc_call, 3), "rpc-serve": (rpc_serve, 3),
    }
    if len(sys.argv) < 2 or sys.argv[1] not in commands or len(sys.argv) != 2 + commands[sys.argv[1]][1]:
        sys.exit(__doc__)
    function, _ = commands[sys.argv[1]]
    arguments = sys.argv[2:]
    if sys.argv[1] == "rpc-serve":
        arguments[2] = int(arguments[2])
    function(*arguments)
