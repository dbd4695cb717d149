"""The local AWS emulator: moto's server, single-threaded.

The stock `moto_server` answers on threads, and its Kinesis model is not thread-safe: concurrent
PutRecords calls into one shard were all acknowledged while ~2% of the records never existed.
Served from one thread, every acknowledged record exists, at the same speed. Single-threaded
werkzeug speaks HTTP/1.0 (one request per connection), so no client can hold the server.

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4566)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
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
