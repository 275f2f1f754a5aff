"""A loopback stand-in of the Anthropic Messages API (``POST /v1/messages``, streaming SSE, tool use).

Claude Code sends every model call as ``POST /v1/messages?beta=true`` with ``stream: true``; the
answer is the event stream ``message_start``, ``content_block_start``/``_delta``/``_stop``,
``message_delta`` (with ``stop_reason``), ``message_stop``.  A :class:`Turn` of kind ``TOOL``
answers with a ``tool_use`` block (``Write`` with ``file_path`` and ``content`` makes the CLI write
a file); errors are the API's JSON error bodies (``rate_limit_error`` for 429, ``overloaded_error``
for 529, ``api_error`` otherwise).
"""

from __future__ import annotations

import itertools
import json
from http.server import BaseHTTPRequestHandler
from typing import Any

from ._server import Kind, StandIn, Turn, send_event, send_json, start_sse

__all__ = ("AnthropicStandIn", "environment")

_ids = itertools.count(1)
_ERROR_TYPES = {429: "rate_limit_error", 529: "overloaded_error", 401: "authentication_error"}


def environment(url: str, *, home: str, key: str = "sk-ant-test", max_retries: int = 0) -> dict[str, str]:
    """The environment that points the real ``claude`` at a stand-in, with its own home and config folder."""
    env = {
        "ANTHROPIC_BASE_URL": url,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": str(max_retries),
        "HOME": home,
        "CLAUDE_CONFIG_DIR": f"{home}/.claude",
    }
    if key:
        env["ANTHROPIC_API_KEY"] = key
    return env


class AnthropicStandIn(StandIn):
    """The Messages API, scripted."""

    def is_model_request(self, method: str, path: str) -> bool:
        return method == "POST" and path.split("?")[0] == "/v1/messages"

    def side_request(self, handler: BaseHTTPRequestHandler, method: str, path: str, body: Any) -> None:
        if path.split("?")[0] == "/v1/messages/count_tokens":
            send_json(handler, 200, {"input_tokens": 100})
        else:
            send_json(handler, 200, {})

    def system_text(self, index: int = 0) -> str:
        """The system prompt of the ``index``-th model request, as one string."""
        body = self.model_requests[index].body
        system = body.get("system") if isinstance(body, dict) else None
        if isinstance(system, list):
            return "\n".join(part.get("text", "") for part in system if isinstance(part, dict))
        return system if isinstance(system, str) else ""

    def answer(self, handler: BaseHTTPRequestHandler, turn: Turn, body: Any) -> None:
        model = body.get("model", "claude-sonnet-4-5") if isinstance(body, dict) else "claude-sonnet-4-5"
        if turn.kind is Kind.STATUS:
            kind = _ERROR_TYPES.get(turn.status, "api_error")
            headers = {"retry-after": "0"} if turn.status == 429 else {}
            send_json(handler, turn.status, {"type": "error", "error": {"type": kind, "message": turn.text or kind}},
                      headers)
            return
        message_id = f"msg_standin_{next(_ids)}"
        usage = {"input_tokens": 100, "output_tokens": 20, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0}
        start_sse(handler)
        send_event(handler, "message_start", {"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}})
        if turn.kind is Kind.CUT:
            send_event(handler, "content_block_start", {"type": "content_block_start", "index": 0,
                                                        "content_block": {"type": "text", "text": ""}})
            handler.wfile.write(b"event: content_block_delta\ndata: {\"type\": \"content_bl")
            handler.wfile.flush()
            handler.close_connection = True
            return
        if turn.kind is Kind.TOOL:
            block = {"type": "tool_use", "id": f"toolu_standin_{next(_ids)}", "name": turn.name, "input": {}}
            send_event(handler, "content_block_start", {"type": "content_block_start", "index": 0,
                                                        "content_block": block})
            send_event(handler, "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps(turn.input)}})
            stop = "tool_use"
        else:
            send_event(handler, "content_block_start", {"type": "content_block_start", "index": 0,
                                                        "content_block": {"type": "text", "text": ""}})
            send_event(handler, "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                "type": "text_delta", "text": turn.text}})
            stop = "end_turn"
        send_event(handler, "content_block_stop", {"type": "content_block_stop", "index": 0})
        send_event(handler, "message_delta", {"type": "message_delta", "delta": {
            "stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": usage["output_tokens"]}})
        send_event(handler, "message_stop", {"type": "message_stop"})
