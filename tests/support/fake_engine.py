"""A tiny OpenAI-shaped HTTP engine standing in for vLLM, which needs a GPU this machine does not have.

Run as a script (stdlib only, so any node's Python runs it) through `ReplicaOrder.command`:
`python fake_engine.py --host {host} --port {port} --model {model}`. Like vLLM it reads its API key from
the environment (`VLLM_API_KEY`; `--key-env` names another variable) and refuses to start without one,
answers `GET /health` to anyone, and answers `/v1/models` and `/v1/chat/completions` only with
`Authorization: Bearer <key>` (401 otherwise). A chat completion echoes the last user message back.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["PATH", "command"]

PATH = Path(__file__).resolve()


def command(*extra: str) -> tuple[str, ...]:
    """A `ReplicaOrder.command` that runs this engine (placeholders filled in by the backend)."""
    return (sys.executable, str(PATH), "--host", "{host}", "--port", "{port}", "--model", "{model}", *extra)


def _handler(key: str, model: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            sys.stderr.write(f"{self.command} {self.path} {args[1] if len(args) > 1 else ''}\n")

        def _answer(self, status: int, body: dict[str, object]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {key}":
                return True
            self._answer(401, {"error": {"message": "Unauthorized", "type": "invalid_request_error", "code": None}})
            return False

        def do_GET(self) -> None:
            if self.path == "/health":
                self._answer(200, {})
            elif self.path == "/v1/models" and self._authorized():
                self._answer(200, {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "fake"}]})
            elif self.path != "/v1/models":
                self._answer(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            if self.path != "/v1/chat/completions":
                self._answer(404, {"error": {"message": "not found"}})
                return
            if not self._authorized():
                return
            said = next((m["content"] for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
            reply = f"echo: {said}"
            self._answer(
                200,
                {
                    "id": f"chatcmpl-{time.monotonic_ns()}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", model),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
                    ],
                    "usage": {
                        "prompt_tokens": len(str(said).split()),
                        "completion_tokens": len(reply.split()),
                        "total_tokens": len(str(said).split()) + len(reply.split()),
                    },
                },
            )

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(prog="fake-engine")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--key-env", default="VLLM_API_KEY")
    args = parser.parse_args()
    key = os.environ.get(args.key_env)
    if not key:
        print(f"fake engine: no API key in ${args.key_env}", file=sys.stderr)
        return 2
    server = ThreadingHTTPServer((args.host, args.port), _handler(key, args.model))
    print(f"fake engine serving {args.model} on {args.host}:{args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
