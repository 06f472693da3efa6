"""A stand-in for the Synapse platform's job and log endpoints, for upload tests.

Run as a process (`python tests/platform_server.py RECORD_FILE`): it prints its port,
answers `PATCH /jobs/<id>/` and `POST /logs/` as the backend does, and appends what
arrives to RECORD_FILE (one JSON line per log entry or job update, flushed before the
answer). Faults on request: `--fail-every K` answers every K-th log request with a 500
without storing it; `--exit-after N` stops the process after answering the N-th;
`--hold-after N` stores the N-th, writes RECORD_FILE.held, and never answers;
`--delay S` answers each log request S seconds late.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("record", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--exit-after", type=int, default=0)
    parser.add_argument("--hold-after", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    lock = threading.Lock()
    count = {"logs": 0}
    record = open(args.record, "a")  # noqa: SIM115 - open for the process's life

    def store(entry: dict[str, Any]) -> None:
        record.write(json.dumps(entry) + "\n")
        record.flush()
        os.fsync(record.fileno())

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *values: Any) -> None:  # quiet
            pass

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"null")

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def do_PATCH(self) -> None:
            body = self._body()
            job = self.path.strip("/").split("/")[-1]
            with lock:
                store({"kind": "update_job", "job": job, "body": body})
            self._answer(200, {"id": job, **body})

        def do_POST(self) -> None:
            body = self._body()
            time.sleep(args.delay)
            entries = body if isinstance(body, list) else [body]
            with lock:
                count["logs"] += 1
                number = count["logs"]
                if args.fail_every and number % args.fail_every == 0:
                    self._answer(500, {"detail": "injected failure"})
                    return
                for entry in entries:
                    store({"kind": "log", **entry})
                if number == args.hold_after:
                    Path(f"{args.record}.held").write_text(str(number))
                    while True:
                        time.sleep(3600)
            self._answer(200, entries)
            if number == args.exit_after:
                os._exit(0)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
