"""Verdicts on the output shapes the real CLIs printed (Claude Code 2.1.332, Codex 0.171.0), without running them.

Each case is a line the real CLI printed against the loopback stand-ins (``tests/standins``), so the
verdict rules stay true to the real shapes where no CLI is installed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from maestro_parallel.agents import ResultScanner, Verdict, judge

#: A real success: many keys maestro does not know (a newer CLI adds more); they are accepted.
CLAUDE_SUCCESS = json.loads(
    '{"duration_api_ms":61,"stop_reason":"end_turn","session_id":"9cc33a7c-8642-4e52-8fc3-a3d5ec28b765",'
    '"total_cost_usd":0.0008,"usage":{"input_tokens":100,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,'
    '"output_tokens":20,"output_tokens_details":{"thinking_tokens":0},"server_tool_use":{"web_search_requests":0,'
    '"web_fetch_requests":0},"service_tier":"standard","inference_geo":"","iterations":[],"speed":"standard",'
    '"fallback_credit":null},"permission_denials":[],"terminal_reason":"completed","fast_mode_state":"off",'
    '"subagent_stats":{"spawned":0,"by_type":{}},"safety_stops":0,"is_error":false,"num_turns":1,'
    '"subtype":"success","api_error_status":null,"result":"all done","ttft_ms":316,"type":"result",'
    '"duration_ms":333,"uuid":"dce2fd26-1a0f-4d3a-af5c-caec2506b503","queued_turn_count":0,"result_index":0}'
)


def claude(**changes: Any) -> dict[str, Any]:
    return {**CLAUDE_SUCCESS, **changes}


def run(fmt: str, output: bytes, code: int) -> Verdict:
    scanner = ResultScanner(fmt)
    scanner.feed(output)
    scanner.finish()
    return judge(scanner, code, describe=f"exit code {code}", tail=output[-65536:])


def line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


@pytest.mark.parametrize(("output", "code", "completed", "error", "retryable"), [
    (line(CLAUDE_SUCCESS), 0, True, None, False),
    (line(CLAUDE_SUCCESS) + b"\x1b[?25h junk after the result {not json\n", 0, True, None, False),
    (line(claude(is_error=True, api_error_status=429, result="API Error: Request rejected (429) · rate_limit_error",
                 total_cost_usd=0)), 1, False,
     "exit code 1: agent reported an error: API Error: Request rejected (429) · rate_limit_error", True),
    (line(claude(is_error=True, api_error_status=529,
                 result="API Error: 529 overloaded_error. This is a server-side issue, usually temporary")), 1, False,
     "exit code 1: agent reported an error: API Error: 529 overloaded_error. This is a server-side issue, "
     "usually temporary", True),
    (line(claude(is_error=True, api_error_status=500,
                 result="API Error: 500 api_error. This is a server-side issue, usually temporary — try again")), 1,
     False, "exit code 1: agent reported an error: API Error: 500 api_error. This is a server-side issue, usually "
     "temporary — try again", False),
    (line(claude(is_error=True, subtype="error_max_budget_usd", result=None,
                 errors=["Reached maximum budget ($0.0001)"])), 1, False,
     "exit code 1: agent reported error_max_budget_usd: Reached maximum budget ($0.0001)", False),
    (b"--agent 'nope' not found. Available agents: backend-architect, claude, Explore, general-purpose, Plan\n\n", 1,
     False, "exit code 1: --agent 'nope' not found. Available agents: backend-architect, claude, Explore, "
     "general-purpose, Plan", False),
])
def test_claude_code_real_shapes(
    output: bytes, code: int, completed: bool, error: str | None, retryable: bool
) -> None:
    verdict = run("claude-json", output, code)
    assert (verdict.completed, verdict.error, verdict.retryable) == (completed, error, retryable)
    if b"session_id" in output:
        assert verdict.extra["session_id"] == CLAUDE_SUCCESS["session_id"]


THREAD = b'{"type":"thread.started","thread_id":"01a22a32-df6b-7742-ab0c-069f2ddf3a2e"}\n{"type":"turn.started"}\n'


@pytest.mark.parametrize(("output", "code", "completed", "error", "retryable"), [
    (THREAD + b'{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"all done"}}\n'
     b'{"type":"turn.completed","usage":{"input_tokens":200,"cached_input_tokens":50,"cache_write_input_tokens":0,'
     b'"output_tokens":30,"reasoning_output_tokens":0}}\n', 0, True, None, False),
    (THREAD + b'{"type":"error","message":"exceeded retry limit, last status: 429 Too Many Requests"}\n'
     b'{"type":"turn.failed","error":{"message":"exceeded retry limit, last status: 429 Too Many Requests"}}\n', 1,
     False, "exit code 1: agent reported turn.failed: exceeded retry limit, last status: 429 Too Many Requests", True),
    (THREAD + '{"type":"error","message":"We\u2019re currently experiencing high demand, which may cause temporary '
     'errors."}\n{"type":"turn.failed","error":{"message":"We\u2019re currently experiencing high demand, which may '
     'cause temporary errors."}}\n'.encode(), 1, False,
     "exit code 1: agent reported turn.failed: We\u2019re currently experiencing high demand, which may cause temporary "
     "errors.", True),
    (THREAD + b'{"type":"error","message":"stream disconnected before completion: stream closed before '
     b'response.completed"}\n{"type":"turn.failed","error":{"message":"stream disconnected before completion: '
     b'stream closed before response.completed"}}\n', 1, False,
     "exit code 1: agent reported turn.failed: stream disconnected before completion: stream closed before "
     "response.completed", False),
])
def test_codex_real_shapes(output: bytes, code: int, completed: bool, error: str | None, retryable: bool) -> None:
    verdict = run("codex-jsonl", output, code)
    assert (verdict.completed, verdict.error, verdict.retryable) == (completed, error, retryable)
    assert verdict.extra["session_id"] == "01a22a32-df6b-7742-ab0c-069f2ddf3a2e"
