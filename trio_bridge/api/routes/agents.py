"""A session's agent: its hooks reporting in, prompts submitted to it, and its state."""

from __future__ import annotations

from typing import Any

import trio
from quart import Response
from quart_schema import document_response, validate_querystring, validate_request
from quart_trio import QuartTrio

from ...agents.payload import InvalidHookPayload, check_hook
from ...sessions import ANSWERS_KEPT
from ...sessions.manager import PromptQueuedError
from .._context import API_VERSION, ApiContext, ApiError, json_response
from .._models import AgentOut, AnswerOut, AnswerQuery, HookBody, PromptBody
from .._openapi import raw_response

__all__ = ["register"]


def register(app: QuartTrio, context: ApiContext) -> None:
    """Add the agent routes to ``app``."""
    manager = context.manager

    @app.post(f"/{API_VERSION}/sessions/<session_id>/hooks")
    @validate_request(HookBody)
    @raw_response(204, None, "recorded")
    async def agent_hook(session_id: str, data: HookBody) -> tuple[str, int]:
        """An agent's hook fired in this session (what ``trio-bridge hook EVENT`` sends). Only
        over a connection of this computer, never forwarded; fields the tracker keeps are checked
        (422 ``invalid_hook``)."""
        try:
            check_hook(data.event, data.payload, max_prompt=context.max_input_bytes)
        except InvalidHookPayload as exc:
            raise ApiError(422, "invalid_hook", str(exc)) from None
        await manager.agent_hook(session_id, data.event, data.payload)
        return "", 204

    @app.post(f"/{API_VERSION}/sessions/<session_id>/prompt")
    @validate_request(PromptBody)
    @raw_response(204, None, "submitted, and the agent showed it took the prompt")
    async def submit_prompt(session_id: str, data: PromptBody) -> tuple[str | dict[str, Any], int]:
        """Submit a prompt to the session's agent: its prompt box emptied first if it holds
        text, a bracketed paste, then Enter on its own once the paste is taken, then verified
        (the agent's prompt hook, or output, as its profile says); one retry of Enter. A busy
        agent that queues the prompt: confirmed (204) when it takes it, else 202
        ``{"queued": true, "message": ...}`` once the wait ends: it will run, do not resend.
        409 ``prompt_not_confirmed``: it may not have been submitted; 409
        ``prompt_box_not_empty``: the box held text that could not be cleared (nothing sent)."""
        size = len(data.text.encode("utf-8", "surrogatepass"))
        if size > context.max_input_bytes:
            raise ApiError(
                413, "input_too_large", f"prompt is {size} bytes; at most {context.max_input_bytes} allowed"
            )
        try:
            await manager.submit_prompt(session_id, data.text)
        except PromptQueuedError as exc:
            return {"queued": True, "message": str(exc)}, 202
        return "", 204

    @app.get(f"/{API_VERSION}/sessions/<session_id>/agent")
    @document_response(AgentOut)
    async def agent(session_id: str) -> Response:
        """The state of the session's agent, as its hooks report it."""
        record = await manager.get(session_id)
        tracker = manager.agent(session_id)
        if tracker is None:  # no hook since the daemon started: what the record kept
            state = "exited" if record.state.ended else (record.agent_state or "unknown")
            return json_response(
                AgentOut(
                    state=state,
                    native_id=record.native_id,
                    transcript_path=record.transcript_path,
                    last_event=None,
                )
            )
        return json_response(
            AgentOut(
                state=str(tracker.state),
                native_id=tracker.native_id,
                transcript_path=tracker.transcript_path,
                last_event=tracker.last_event,
                last_prompt=tracker.last_prompt,
                evidence=tracker.evidence,
                seconds_in_state=round(max(0.0, trio.current_time() - tracker.changed_at), 3),
            )
        )

    @app.get(f"/{API_VERSION}/sessions/<session_id>/agent/answer")
    @validate_querystring(AnswerQuery)
    @document_response(AnswerOut)
    async def agent_answer(session_id: str, query_args: AnswerQuery) -> Response:
        """A final answer of the session's agent, as its turn-end hook reported it: the turn
        ``turn``'s, or the last one. The session keeps its last 8 (on disk: they outlive a
        restart; the record's ``agent_answers`` counts them, and its ``agent`` event tells of a
        new one). 404 ``no_answer``: none yet, or that turn's is no longer kept; 409
        ``not_an_agent``."""
        answer = await manager.agent_answer(session_id, query_args.turn)
        if answer is None:
            turn = query_args.turn
            which = "yet" if turn is None else f"for turn {turn} (only the last {ANSWERS_KEPT} are kept)"
            raise ApiError(404, "no_answer", f"session {session_id}: the agent has no final answer {which}")
        return json_response(AnswerOut(turn=answer.turn, text=answer.text, at=answer.at))
