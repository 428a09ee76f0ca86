"""A local alert webhook for the alerts tests (the sensor in process, and ``dagster dev``)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer


class Webhook:
    """A local webhook that answers 503 to its first ``refuse`` requests, then 204."""

    def __init__(self, refuse: int) -> None:
        self.refuse, self.requests, self.received = refuse, 0, []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.requests += 1
                if hook.requests <= hook.refuse:
                    self.send_response(503)
                else:
                    hook.received.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
