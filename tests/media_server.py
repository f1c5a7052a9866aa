"""A threaded HTTP server on a loopback address for the URL tests: real media files, pages that embed them,
and the bad cases (a stalled answer, error statuses, redirects, bodies cut short or sent without a length).

Routes:
  /media/<name>      the file with Content-Length
  /nolength/<name>   the file without Content-Length (the body ends when the connection closes)
  /cut/<name>        Content-Length of the whole file, then half of it and a closed connection
  /page/<name>       an HTML page from `pages`
  /status/<code>     an empty answer with that HTTP status
  /redirect?to=URL   302 to URL, with Content-Length: 0 (else the client waits for the read timeout)
  /slow              sends nothing until the server stops or SLOW_SECONDS pass
"""

from __future__ import annotations

import mimetypes
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SLOW_SECONDS = 30.0
CONTENT_TYPES = {".m4a": "audio/mp4", ".opus": "audio/ogg", ".webm": "video/webm", ".flac": "audio/flac"}


class MediaServer:
    """Serves `files` (name -> path) and `pages` (name -> HTML) on host:random port until `close()`."""

    def __init__(self, files: dict[str, Path], host: str = "127.0.0.1"):
        self.files = dict(files)
        self.pages: dict[str, str] = {}
        self.requests: list[str] = []  # the paths asked for, in order
        self.cookies: list[str] = []  # the Cookie header of each
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer((host, 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - the base class's name
                pass

            def do_GET(self):
                server.requests.append(self.path)
                server.cookies.append(self.headers.get("Cookie", ""))
                parts = urllib.parse.urlsplit(self.path)
                route, _, name = parts.path.lstrip("/").partition("/")
                if route in ("media", "nolength", "cut") and name in server.files:
                    self._send_file(server.files[name], route)
                elif route == "page" and name in server.pages:
                    self._send_bytes(server.pages[name].encode(), "text/html; charset=utf-8")
                elif route == "status" and name.isdigit():
                    self._send_bytes(b"", "text/plain", status=int(name))
                elif route == "redirect":
                    self.send_response(302)
                    self.send_header("Location", urllib.parse.parse_qs(parts.query)["to"][0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif route == "slow":
                    server._stop.wait(SLOW_SECONDS)
                else:
                    self._send_bytes(b"not found", "text/plain", status=404)

            def _send_bytes(self, body: bytes, content_type: str, status: int = 200):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _send_file(self, path: Path, route: str):
                data = path.read_bytes()
                suffix = path.suffix.lower()
                content_type = CONTENT_TYPES.get(suffix) or mimetypes.guess_type(path.name)[0]
                self.send_response(200)
                self.send_header("Content-Type", content_type or "application/octet-stream")
                if route != "nolength":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if route == "cut" else data)
                self.close_connection = True

        return Handler
