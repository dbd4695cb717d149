"""The local AWS emulator: moto's server, single-threaded.

The stock `moto_server` answers on threads, and its Kinesis model is not thread-safe: concurrent
PutRecords calls into one shard were all acknowledged while ~2% of the records never existed.
Served from one thread, every acknowledged record exists, at the same speed. Single-threaded
werkzeug speaks HTTP/1.0 (one request per connection), so no client can hold the server.

moto's SQS reads every attribute of a queue, the approximate message counts included (each a
pass over all the queue's messages), whenever it reads any one attribute: several times for each
message sent or received, so a queue holding n messages costs O(n) per message and a soak
grinds to a halt. `fast_sqs_attributes` leaves the counts out except where GetQueueAttributes
asks for them: the same answers, in linear time.

moto's FIFO queues forget a deduplication id once its message is deleted; SQS remembers it for
5 minutes whatever happens to the message. `fifo_deduplication_like_sqs` remembers it, so that a
consumer that deletes promptly sees what it would see on AWS (no duplicate within 5 minutes).

SQS accepts only `#x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF` in a
message body and refuses others with `InvalidMessageContents` (per entry, in a batch); moto
accepts anything. `sqs_message_characters_like_aws` applies the rule.

moto's DynamoDB hides behaviours of the real one that the product must handle, so
`dynamodb_like_aws` brings them back (each is documented by AWS):
- a new table is CREATING for a while (here `--table-create-seconds`, default 1): DescribeTable
  says so, its indexes too, its stream is ENABLING, UpdateTimeToLive is refused
  (ResourceInUseException) and every read or write answers ResourceNotFoundException;
- TTL is enabled asynchronously: DescribeTimeToLive says ENABLING for as long;
- Query returns a LastEvaluatedKey whenever it stops at its Limit, even when nothing follows
  (moto returns one only when another item exists);
- BatchWriteItem refuses the whole call (ValidationException, nothing written) when one item is
  over 400 KB, DynamoDB's item size limit (moto writes the items before the large one).

Usage: python scripts/emulator.py [--host 127.0.0.1] [--port 4566] [--table-create-seconds 1]
"""

import argparse
import signal
import sys

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


APPROXIMATE_COUNTS = {
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesDelayed",
    "ApproximateNumberOfMessagesNotVisible",
}


def fast_sqs_attributes() -> None:
    """Computes a queue's approximate counts only for GetQueueAttributes (see the module doc)."""
    from moto.sqs import models

    queue_cls = models.Queue
    every_attribute = queue_cls.attributes.fget
    without_counts = [a for a in queue_cls.BASE_ATTRIBUTES if a not in APPROXIMATE_COUNTS]
    counts_wanted = [False]  # one thread serves every request

    def attributes(queue):
        if counts_wanted[0]:
            return every_attribute(queue)
        queue.BASE_ATTRIBUTES = without_counts  # shadows the class list for this call
        try:
            return every_attribute(queue)
        finally:
            del queue.BASE_ATTRIBUTES

    get_queue_attributes = models.SQSBackend.get_queue_attributes

    def get_queue_attributes_with_counts(backend, queue_name, attribute_names):
        counts_wanted[0] = any(n == "All" or n in APPROXIMATE_COUNTS for n in attribute_names)
        try:
            return get_queue_attributes(backend, queue_name, attribute_names)
        finally:
            counts_wanted[0] = False

    queue_cls.attributes = property(attributes)
    models.SQSBackend.get_queue_attributes = get_queue_attributes_with_counts


def fifo_deduplication_like_sqs() -> None:
    """Keeps each FIFO deduplication id for 5 minutes after its send (see the module doc)."""
    from moto.sqs import models

    window_ms = getattr(models, "DEDUPLICATION_TIME_IN_SECONDS", 300) * 1000
    add_message = models.Queue.add_message

    def add_message_once(queue, message):
        if queue.fifo_queue and message.deduplication_id:
            sent = queue.__dict__.setdefault("_deduplication_ids_sent_at", {})
            now = message.sent_timestamp
            first = sent.get(message.deduplication_id)
            if first is not None and now - first < window_ms:
                return  # accepted, not delivered: as SQS does
            if len(sent) > 50_000:
                for key in [k for k, at in sent.items() if now - at >= window_ms]:
                    del sent[key]
            sent[message.deduplication_id] = now
        add_message(queue, message)

    models.Queue.add_message = add_message_once


def sqs_refuses(body: str) -> bool:
    """Whether SQS refuses `body`: a character outside the ones its documentation lists."""
    for c in body:
        o = ord(c)
        if not (o in (0x9, 0xA, 0xD) or 0x20 <= o <= 0xD7FF or 0xE000 <= o <= 0xFFFD or o >= 0x10000):
            return True
    return False


def sqs_message_characters_like_aws() -> None:
    """Refuses message bodies with characters SQS refuses (see the module doc)."""
    from moto.sqs import models
    from moto.sqs.exceptions import SQSException

    class InvalidMessageContents(SQSException):
        def __init__(self) -> None:
            super().__init__("InvalidMessageContents", "Invalid characters found in the message body.")

    send_message = models.SQSBackend.send_message
    send_message_batch = models.SQSBackend.send_message_batch

    def send_message_checked(backend, queue_name, message_body, *args, **kwargs):
        if sqs_refuses(message_body):
            raise InvalidMessageContents()
        return send_message(backend, queue_name, message_body, *args, **kwargs)

    def send_message_batch_checked(backend, queue_name, entries):
        refused = {k: e for k, e in entries.items() if sqs_refuses(e["MessageBody"])}
        kept = {k: e for k, e in entries.items() if k not in refused}
        failed = [
            {
                "Id": e["Id"],
                "SenderFault": True,
                "Code": "InvalidMessageContents",
                "Message": "Invalid characters found in the message body.",
            }
            for e in refused.values()
        ]
        if not kept:
            return [], failed
        # The batch call sends through send_message: bodies were checked above.
        messages, other_failures = send_message_batch(backend, queue_name, kept)
        return messages, failed + other_failures

    models.SQSBackend.send_message = send_message_checked
    models.SQSBackend.send_message_batch = send_message_batch_checked


# DynamoDB's item size limit, in bytes, as it measures items (`item_size`).
MAX_ITEM_BYTES = 400 * 1024


def attribute_value_size(value: dict) -> int:
    """Bytes DynamoDB counts for one attribute value (the rules of its developer guide)."""
    import base64

    (kind, v), = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        digits = v.lstrip("-").replace(".", "").split("e")[0].split("E")[0].strip("0")
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(base64.b64decode(v))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(x.encode()) for x in v)
    if kind == "NS":
        return sum(attribute_value_size({"N": x}) for x in v)
    if kind == "BS":
        return sum(len(base64.b64decode(x)) for x in v)
    if kind == "L":
        return 3 + sum(1 + attribute_value_size(x) for x in v)
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + attribute_value_size(x) for k, x in v.items())
    return 0


def item_size(item: dict) -> int:
    return sum(len(name.encode()) + attribute_value_size(v) for name, v in item.items())


def dynamodb_like_aws(create_seconds: float) -> None:
    """Tables that take time to create, asynchronous TTL, Limit and item size as on AWS (see the
    module doc)."""
    import time

    from moto.dynamodb import models, responses
    from moto.dynamodb.exceptions import (
        MockValidationException,
        ResourceInUseException,
        ResourceNotFoundException,
    )
    from moto.dynamodb.models.table import Table
    from moto.dynamodbstreams import models as stream_models

    def creating(table) -> bool:
        return time.monotonic() - table.__dict__.get("_created_at", 0.0) < create_seconds

    create_table = models.DynamoDBBackend.create_table

    def create_table_creating(backend, *args, **kwargs):
        table = create_table(backend, *args, **kwargs)
        table._created_at = time.monotonic()
        return table

    describe = Table.describe

    def describe_creating(table, base_key: str = "TableDescription"):
        answer = describe(table, base_key)
        if creating(table):
            answer[base_key]["TableStatus"] = "CREATING"
            for index in answer[base_key].get("GlobalSecondaryIndexes", []):
                index["IndexStatus"] = "CREATING"
        return answer

    def refused_while_creating(method, tables_of, error):
        def guarded(handler):
            for name in tables_of(handler.body):
                table = handler.dynamodb_backend.tables.get(name)
                if table is not None and creating(table):
                    raise error(name)
            return method(handler)

        return guarded

    not_found = lambda name: ResourceNotFoundException(table_name=name)  # noqa: E731
    in_use = lambda name: ResourceInUseException(  # noqa: E731
        f"Attempt to change a resource which is still in use: Table is being created: {name}"
    )
    one_table = lambda body: [body.get("TableName", "")]  # noqa: E731
    request_items = lambda body: list(body.get("RequestItems", {}))  # noqa: E731
    for name in ("put_item", "get_item", "delete_item", "update_item", "query", "scan"):
        method = getattr(responses.DynamoHandler, name)
        setattr(responses.DynamoHandler, name, refused_while_creating(method, one_table, not_found))
    for name in ("batch_write_item", "batch_get_item"):
        method = getattr(responses.DynamoHandler, name)
        setattr(responses.DynamoHandler, name, refused_while_creating(method, request_items, not_found))
    responses.DynamoHandler.update_time_to_live = refused_while_creating(
        responses.DynamoHandler.update_time_to_live, one_table, in_use
    )

    update_ttl = models.DynamoDBBackend.update_time_to_live

    def update_ttl_async(backend, table_name, ttl_spec):
        update_ttl(backend, table_name, ttl_spec)
        backend.get_table(table_name)._ttl_set_at = time.monotonic()

    describe_ttl = models.DynamoDBBackend.describe_time_to_live

    def describe_ttl_async(backend, table_name):
        answer = dict(describe_ttl(backend, table_name))
        table = backend.get_table(table_name)
        recent = time.monotonic() - table.__dict__.get("_ttl_set_at", 0.0) < create_seconds
        if recent and answer.get("TimeToLiveStatus") == "ENABLED":
            answer["TimeToLiveStatus"] = "ENABLING"
        return answer

    describe_stream = stream_models.DynamoDBStreamsBackend.describe_stream

    def describe_stream_enabling(backend, arn):
        answer = describe_stream(backend, arn)
        if creating(backend._get_table_from_arn(arn)) and answer["StreamStatus"] == "ENABLED":
            answer["StreamStatus"] = "ENABLING"
        return answer

    query = Table.query

    def query_stops_at_its_limit(table, hash_key, range_comparison, range_objs, limit, *args, **kwargs):
        results, scanned, last_key = query(
            table, hash_key, range_comparison, range_objs, limit, *args, **kwargs
        )
        if last_key is None and limit and scanned >= limit and results:
            index_name = args[3] if len(args) > 3 else kwargs.get("index_name")
            last_key = table._get_last_evaluated_key(results[-1], index_name)
        return results, scanned, last_key

    batch_write_item = responses.DynamoHandler.batch_write_item

    def batch_write_item_sized(handler):
        for requests in handler.body.get("RequestItems", {}).values():
            for request in requests:
                item = request.get("PutRequest", {}).get("Item")
                if item is not None and item_size(item) > MAX_ITEM_BYTES:
                    raise MockValidationException("Item size has exceeded the maximum allowed size")
        return batch_write_item(handler)

    models.DynamoDBBackend.create_table = create_table_creating
    Table.describe = describe_creating
    models.DynamoDBBackend.update_time_to_live = update_ttl_async
    models.DynamoDBBackend.describe_time_to_live = describe_ttl_async
    stream_models.DynamoDBStreamsBackend.describe_stream = describe_stream_enabling
    Table.query = query_stops_at_its_limit
    responses.DynamoHandler.batch_write_item = batch_write_item_sized


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4566)
    parser.add_argument("--table-create-seconds", type=float, default=1.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fast_sqs_attributes()
    fifo_deduplication_like_sqs()
    sqs_message_characters_like_aws()
    dynamodb_like_aws(args.table_create_seconds)
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        app,
        threaded=False,
        use_reloader=False,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
