"""A loopback stand-in of the OpenAI Responses API (``POST /v1/responses``, SSE) for the real ``codex``.

Codex ignores ``OPENAI_BASE_URL``: it is pointed here by a model provider in
``$CODEX_HOME/config.toml`` (:func:`write_codex_home`).  A turn answers with the events Codex needs:
``response.created``, ``response.output_item.done`` per item, ``response.completed`` with usage.  A
:class:`Turn` of kind ``TOOL`` named ``apply_patch`` is a ``custom_tool_call`` whose input is the
patch text (``input={"patch": ...}``); any other name is a ``function_call`` (``exec_command`` with
``{"cmd": ...}``).  ``FAILED`` is a ``response.failed`` event; ``STATUS`` an HTTP error.
"""

from __future__ import annotations

import itertools
import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from ._server import Kind, StandIn, Turn, send_event, send_json, start_sse

__all__ = ("OpenAIStandIn", "environment", "write_codex_home")

_ids = itertools.count(1)


def write_codex_home(folder: Path, url: str) -> Path:
    """A ``CODEX_HOME`` whose only model provider is the stand-in at ``url``; no retries, no background calls."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(
        'model = "gpt-5.5"\n'
        'model_provider = "standin"\n'
        'approval_policy = "never"\n'
        "[model_providers.standin]\n"
        'name = "stand-in"\n'
        f'base_url = "{url}/v1"\n'
        'wire_api = "responses"\n'
        'env_key = "STANDIN_API_KEY"\n'
        "supports_websockets = false\n"
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
        "[analytics]\nenabled = false\n"
        "[features]\nplugins = false\n"
    )
    return folder


def environment(url: str, *, home: str, codex_home: str, key: str = "sk-test") -> dict[str, str]:
    """The environment that points the real ``codex`` at a stand-in (after :func:`write_codex_home`)."""
    env = {"HOME": home, "CODEX_HOME": codex_home}
    if key:
        env["STANDIN_API_KEY"] = key
    return env


class OpenAIStandIn(StandIn):
    """The Responses API, scripted."""

    def is_model_request(self, method: str, path: str) -> bool:
        return method == "POST" and path.split("?")[0] == "/v1/responses"

    def side_request(self, handler: BaseHTTPRequestHandler, method: str, path: str, body: Any) -> None:
        if path.split("?")[0] == "/v1/models":
            send_json(handler, 200, {"object": "list", "data": [{"id": "gpt-5.5", "object": "model"}]})
        else:
            send_json(handler, 404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def instructions(self, index: int = 0) -> str:
        body = self.model_requests[index].body
        return body.get("instructions", "") if isinstance(body, dict) else ""

    def answer(self, handler: BaseHTTPRequestHandler, turn: Turn, body: Any) -> None:
        if turn.kind is Kind.STATUS:
            code = "rate_limit_exceeded" if turn.status == 429 else "server_error"
            send_json(handler, turn.status, {"error": {"message": turn.text or code, "type": code, "code": code}},
                      {"retry-after": "0"} if turn.status == 429 else None)
            return
        response_id = f"resp_standin_{next(_ids)}"
        base = {"id": response_id, "object": "response", "model": "gpt-5.5", "status": "in_progress", "output": []}
        start_sse(handler)
        send_event(handler, "response.created", {"type": "response.created", "response": base})
        if turn.kind is Kind.CUT:
            handler.wfile.write(b"event: response.output_item.done\ndata: {\"type\": \"response.out")
            handler.wfile.flush()
            return
        if turn.kind is Kind.FAILED:
            send_event(handler, "response.failed", {"type": "response.failed", "response": {
                **base, "status": "failed", "error": {"code": "server_error", "message": turn.text or "failed"}}})
            return
        if turn.kind is Kind.TOOL and turn.name == "apply_patch":
            item: dict[str, Any] = {"type": "custom_tool_call", "id": f"ctc_{next(_ids)}", "status": "completed",
                                    "call_id": f"call_{next(_ids)}", "name": "apply_patch",
                                    "input": turn.input["patch"]}
        elif turn.kind is Kind.TOOL:
            item = {"type": "function_call", "id": f"fc_{next(_ids)}", "status": "completed",
                    "call_id": f"call_{next(_ids)}", "name": turn.name, "arguments": json.dumps(turn.input)}
        else:
            item = {"type": "message", "id": f"msg_{next(_ids)}", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": turn.text, "annotations": []}]}
        send_event(handler, "response.output_item.done", {"type": "response.output_item.done", "output_index": 0,
                                                          "item": item})
        usage = {"input_tokens": 200, "input_tokens_details": {"cached_tokens": 50}, "output_tokens": 30,
                 "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 230}
        send_event(handler, "response.completed", {"type": "response.completed", "response": {
            **base, "status": "completed", "output": [item], "usage": usage}})
