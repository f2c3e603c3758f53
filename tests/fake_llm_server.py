"""A local OpenAI-compatible chat server for tests: scripted replies, errors and delays.

`FakeLLMServer` serves POST /v1/chat/completions (and /chat/completions) on 127.0.0.1 at a free
port from a thread. Each request takes the next item of its script:

- a string: a normal completion with that content;
- a `Reply(content=..., status=..., delay=..., headers=..., prompt_tokens=..., completion_tokens=...)`:
  status != 200 sends an OpenAI-style error body (429, 500, ...); delay sleeps first.

- a callable: called with the `Request`, returns one of the above (replies that depend on
  what the model was sent, e.g. an edit of the file in the prompt).

When the script runs out, `default` answers (a 500 unless set). Every request is recorded
(`requests`: path, headers, parsed JSON body) so tests can check what the model was sent.
Used as a context manager. Never reaches the network.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    content: str = ""
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    prompt_tokens: int = 1000
    completion_tokens: int = 500


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages", [])

    @property
    def text(self) -> str:
        """All message contents joined (what the model saw)."""
        return "\n".join(str(m.get("content", "")) for m in self.messages)


class FakeLLMServer:
    def __init__(self, script: list[str | Reply] | None = None, default: str | Reply | None = None):
        self.script: list[str | Reply] = list(script or [])
        self.default = default if default is not None else Reply(status=500)
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                path = self.path.split("?", 1)[0]
                if path not in ("/v1/chat/completions", "/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {path}", "type": "not_found"}})
                    return
                request = Request(path, dict(self.headers.items()), body)
                with server._lock:
                    server.requests.append(request)
                    item = server.script.pop(0) if server.script else server.default
                if callable(item):
                    item = item(request)
                reply = Reply(content=item) if isinstance(item, str) else item
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.status != 200:
                    err = {"message": f"fake error {reply.status}", "type": "server_error", "code": str(reply.status)}
                    self._send(reply.status, {"error": err}, reply.headers)
                    return
                self._send(200, server._completion(body, reply), reply.headers)

            def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @staticmethod
    def _completion(body: dict, reply: Reply) -> dict:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": reply.content}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            },
        }

    def start(self) -> "FakeLLMServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "FakeLLMServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
