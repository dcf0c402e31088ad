"""A webhook receiver for the test suite, as a user would write one: it verifies every
delivery with the official Python library of Standard Webhooks (`standardwebhooks`), not
with the service's own code, and answers as the test scripted it.

Run: python webhook_receiver.py  -> prints the port it listens on (127.0.0.1), then serves.

Control (JSON):
  POST /_config {"path": "/a", "secret": "whsec_...", "statuses": [503, 503, 200],
                 "delay": 0.0, "location": "/b"}
      How requests to `path` are answered: the i-th request gets statuses[i] (the last one
      repeats; default [204]), after `delay` seconds; `location` is sent with 3xx. With a
      secret every delivery is verified (a failed verification answers 401).
  GET /_requests?path=/a -> [{"path", "headers", "body", "verified", "error", "at"}]
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from standardwebhooks.webhooks import Webhook

LOCK = threading.Lock()
CONFIG = {}
REQUESTS = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/_requests":
            path = parse_qs(url.query).get("path", [None])[0]
            with LOCK:
                seen = [r for r in REQUESTS if path is None or r["path"] == path]
            self.reply(200, json.dumps(seen).encode(), [("Content-Type", "application/json")])
        else:
            self.reply(404)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        path = urlparse(self.path).path
        if path == "/_config":
            config = json.loads(body)
            with LOCK:
                CONFIG[config["path"]] = dict(config, served=0)
            self.reply(204)
            return
        with LOCK:
            config = CONFIG.get(path, {"statuses": [204], "served": 0})
            statuses = config.get("statuses") or [204]
            status = statuses[min(config["served"], len(statuses) - 1)]
            config["served"] += 1
            secret = config.get("secret")
        record = {
            "path": path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
            "verified": None,
            "error": None,
            "at": time.time(),
        }
        if secret:
            try:
                Webhook(secret).verify(body, dict(self.headers.items()))
                record["verified"] = True
            except Exception as e:  # the library's own refusal, kept for the test to show
                record["verified"] = False
                record["error"] = "%s: %s" % (type(e).__name__, e)
                status = 401
        with LOCK:
            REQUESTS.append(record)
        delay = config.get("delay", 0)
        if delay:
            time.sleep(delay)
        headers = []
        if 300 <= status < 400 and config.get("location"):
            headers.append(("Location", config["location"]))
        try:
            self.reply(status, b'{"ok": true}' if status < 300 else b"scripted failure", headers)
        except (BrokenPipeError, ConnectionResetError):
            pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
