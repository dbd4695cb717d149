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

Usage: python scripts/emulator.py [--host 127.0.0.1] [--port 4566]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4566)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fast_sqs_attributes()
    fifo_deduplication_like_sqs()
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
