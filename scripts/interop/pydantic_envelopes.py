#!/usr/bin/env python3
"""Envelopes as Python services write and validate them: pydantic v2 and json.dumps.

  pydantic_envelopes.py write URL QUEUE       publish one envelope in each form Python writes
                                              (see FORMS), print what was sent as JSON
  pydantic_envelopes.py validate URL QUEUE N  read N messages, validate each with the pydantic
                                              model (strict), print the results as JSON

The model is the usual Python MessageEnvelope: id a UUID, timestamp a datetime, version and
type strings, data an object, metadata a dict of any JSON values.

Used by Tests/PatternsIntegrationTests/PatternsInteropTests.swift; runnable by hand against any broker.
"""
import datetime
import json
import sys
import uuid
from typing import Any

import pika
from pydantic import BaseModel, Field, ValidationError


class MessageEnvelope(BaseModel):
    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    timestamp: datetime.datetime
    version: str = "1.0"
    type: str = Field(min_length=1)
    data: dict[str, Any]
    metadata: dict[str, Any] = Field(default_factory=dict)


UTC = datetime.timezone.utc
METADATA = {"source": "py-shop", "correlation_id": None, "user_id": 42, "attempt": 3, "ratio": 0.5,
            "urgent": True, "tags": ["a", 1], "origin": {"region": "eu"}}


def forms():
    """(name, body, the id, the timestamp in epoch milliseconds) for each way Python writes one."""
    aware = datetime.datetime(2024, 5, 17, 12, 30, 0, 123456, tzinfo=UTC)
    naive = aware.replace(tzinfo=None)
    whole = datetime.datetime(2024, 5, 17, 14, 30, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    result = []

    def add(name, body, envelope_id, stamp):
        result.append((name, body, str(envelope_id), round(stamp.replace(tzinfo=stamp.tzinfo or UTC).timestamp() * 1000)))

    for name, stamp in [("pydantic-aware", aware), ("pydantic-naive", naive), ("pydantic-offset", whole)]:
        model = MessageEnvelope(timestamp=stamp, type="shop.order.placed", data={"form": name}, metadata=METADATA)
        add(name, model.model_dump_json(), model.id, stamp)
    for name, stamp, hexed in [("dumps-aware", aware, False), ("dumps-naive-hex", naive, True),
                               ("dumps-no-fraction", whole, False)]:
        envelope_id = uuid.uuid4()
        envelope = {"id": envelope_id.hex if hexed else envelope_id, "timestamp": stamp, "version": "1.0",
                    "type": "shop.order.placed", "data": {"form": name}, "metadata": METADATA}
        add(name, json.dumps(envelope, default=str), envelope_id, stamp)
    return result


def write(url, queue):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    sent = []
    for name, body, envelope_id, milliseconds in forms():
        properties = pika.BasicProperties(content_type="application/json", delivery_mode=2, type="shop.order.placed")
        channel.basic_publish("", queue, body.encode(), properties, mandatory=True)
        sent.append({"form": name, "body": body, "id": envelope_id, "epoch_ms": milliseconds})
    connection.close()
    print(json.dumps(sent))


def validate(url, queue, count):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    results = []
    for method, properties, body in channel.consume(queue, inactivity_timeout=30):
        if method is None:
            sys.exit(f"no message within 30 s ({len(results)} of {count})")
        channel.basic_ack(method.delivery_tag)
        try:
            model = MessageEnvelope.model_validate_json(body, strict=True)
            results.append({
                "ok": True, "id": str(model.id), "epoch_ms": round(model.timestamp.timestamp() * 1000),
                "aware": model.timestamp.utcoffset() == datetime.timedelta(0), "type": model.type,
                "version": model.version, "data": model.data, "metadata": model.metadata,
                "message_id": properties.message_id,
            })
        except ValidationError as error:
            results.append({"ok": False, "error": str(error), "body": body.decode("utf-8", "replace")})
        if len(results) == count:
            break
    channel.cancel()
    connection.close()
    print(json.dumps(results))


if __name__ == "__main__":
    commands = {"write": (write, 2), "validate": (validate, 3)}
    if len(sys.argv) < 2 or sys.argv[1] not in commands or len(sys.argv) != 2 + commands[sys.argv[1]][1]:
        sys.exit(__doc__)
    function, _ = commands[sys.argv[1]]
    arguments = sys.argv[2:]
    if sys.argv[1] == "validate":
        arguments[2] = int(arguments[2])
    function(*arguments)
