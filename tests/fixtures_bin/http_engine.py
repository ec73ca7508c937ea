"""A minimal engine: answers GET /health with 200 on --port or --uds.

Options: --startup-delay S (sleep before listening), --crash CODE MESSAGE (print MESSAGE to
stderr and exit with CODE before listening), --unhealthy (answer /health with 503).
"""

from __future__ import annotations

import argparse
import http.server
import os
import socketserver
import sys
import time


class Handler(http.server.BaseHTTPRequestHandler):
    unhealthy = False

    def do_GET(self) -> None:
        status = 503 if self.path == "/health" and self.unhealthy else 200
        if self.path != "/health":
            status = 404
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class UnixServer(socketserver.UnixStreamServer):
    def get_request(self):  # type: ignore[no-untyped-def]
        request, _ = super().get_request()
        return request, ("local", 0)  # BaseHTTPRequestHandler wants a (host, port) pair


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    parser.add_argument("--uds")
    parser.add_argument("--startup-delay", type=float, default=0.0)
    parser.add_argument("--crash", nargs=2, metavar=("CODE", "MESSAGE"))
    parser.add_argument("--unhealthy", action="store_true")
    args = parser.parse_args()
    print(f"http_engine {os.getpid()} starting", flush=True)
    time.sleep(args.startup_delay)
    if args.crash:
        print(args.crash[1], file=sys.stderr, flush=True)
        sys.exit(int(args.crash[0]))
    Handler.unhealthy = args.unhealthy
    server: socketserver.BaseServer
    if args.uds:
        server = UnixServer(args.uds, Handler)
    else:
        server = http.server.HTTPServer(("127.0.0.1", args.port), Handler)
    print("http_engine listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
