"""Run the reference service: ``python -m bench.reference --dsn DSN --api-key KEY [--api-key KEY2 …] [--port 0]``.

One uvicorn worker (uvloop + httptools when installed, as ``uvicorn[standard]`` gives).
Prints one JSON line ``{"event": "listening", "url": …, "pid": …}`` once the pool is
open and the schema applied, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

import uvicorn

from bench.reference.app import create_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True, help="PostgreSQL DSN (its own database)")
    parser.add_argument("--api-key", required=True, action="append",
                        help="a merchant's API key (Bearer); repeat for several merchants")
    parser.add_argument("--webhook-secret", default="whsec_dev_mockstripe", help="mockstripe signing secret")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--pool-size", type=int, default=10, help="asyncpg pool size (10, as Paycast's default)")
    args = parser.parse_args(argv)

    # Our own listening socket, so port 0 works and the URL is known before uvicorn starts.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    url = f"http://{args.host}:{sock.getsockname()[1]}"

    def ready() -> None:
        print(json.dumps({"event": "listening", "url": url, "pid": os.getpid()}), flush=True)

    app = create_app(args.dsn, args.api_key, args.webhook_secret, args.pool_size, on_ready=ready)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
