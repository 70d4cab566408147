"""With a mesh: the other computers' sessions, shown and driven by the computer that runs the bot.

Only one computer polls a bot (the lease, :mod:`.lease`), so that one shows every computer's
sessions. It follows the other computers' lifecycle and agent events (their signed event
streams ``tb:events:<computer>``, checked by :func:`trio_bridge.mesh.computers.open_event`, as
``GET /v1/events?computer=*`` reads them) and reaches their sessions through the mesh's request
API (:meth:`trio_bridge.mesh.Mesh.request`): the same forwarded HTTP requests as
``?computer=NAME``, so the owning computer validates them exactly as its own API does, and with
a mesh secret every request and reply is signed.

What a remote computer refuses comes back as :class:`RemoteRefusedError` (its API's message);
a computer that is offline or silent as :class:`RemoteUnavailableError`.

Final answers: the owning computer keeps each of its agents' final answers (the last 8, in the
session's directory) and counts them in the session's record (``agent_answers``), so its signed
``agent`` event says that a new one exists without carrying it (events stay small). On such an
event the bot fetches the missing turns (:meth:`RemoteSessions.answer`: ``GET
/v1/sessions/{id}/agent/answer?turn=N`` through the mesh) and queues each in its outbox together
with its turn, in one transaction (:meth:`.store.TelegramStore.enqueue_answer`): delivered once,
also after a bot restart, whose start fetches what was answered while it was away.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from .._backoff import Backoff
from ..sessions import SessionRecord, SessionState, UnknownSessionError

if TYPE_CHECKING:
    from ..mesh import Mesh

__all__ = ["RemoteRefusedError", "RemoteSessions", "RemoteUnavailableError", "record_from"]

log = logging.getLogger(__name__)

#: seconds a request to another computer may take (a prompt: its agent's turn to take it)
LIMIT = 15.0
PROMPT_LIMIT = 60.0
#: characters of another computer's answer taken at most (its computer keeps at most 1 MiB)
ANSWER_LIMIT = 1 << 20

_STR = ("id", "title", "cwd", "origin", "tmux_name")
_OPT_STR = ("agent", "agent_state", "native_id", "transcript_path")


class RemoteRefusedError(Exception):
    """The owning computer answered the request with an error (its message is this one's)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RemoteUnavailableError(Exception):
    """The owning computer is offline, did not answer in time, or Redis is unreachable."""


def record_from(value: object) -> SessionRecord:
    """A session record from another computer (an API session or an event's record).

    Raises:
        ValueError: it is not one.
    """
    if not isinstance(value, dict):
        raise ValueError("not an object")
    for key in _STR:
        if not isinstance(value.get(key), str):
            raise ValueError(f"{key} is not text")
    for key in _OPT_STR:
        if value.get(key) is not None and not isinstance(value[key], str):
            raise ValueError(f"{key} is not text")
    for key in ("exit_code", "exit_signal"):
        if value.get(key) is not None and not isinstance(value[key], int):
            raise ValueError(f"{key} is not a number")
    answers = value.get("agent_answers", 0)
    if not isinstance(answers, int) or isinstance(answers, bool) or not 0 <= answers < 1 << 53:
        raise ValueError("agent_answers is not a count")
    if not isinstance(value.get("created_at"), int | float):
        raise ValueError("created_at is not a number")
    ended_at = value.get("ended_at")
    command, env_keys = value.get("command"), value.get("env_keys") or []
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        raise ValueError("command is not a list of text")
    if not isinstance(env_keys, list) or not all(isinstance(c, str) for c in env_keys):
        raise ValueError("env_keys is not a list of text")
    return SessionRecord(
        id=value["id"], title=value["title"][:256], command=tuple(command), cwd=value["cwd"],
        env_keys=tuple(env_keys), created_at=float(value["created_at"]),
        state=SessionState(str(value.get("state"))), origin=value["origin"], tmux_name=value["tmux_name"],
        ended_at=float(ended_at) if isinstance(ended_at, int | float) else None,
        exit_code=value.get("exit_code"), exit_signal=value.get("exit_signal"), agent=value.get("agent"),
        agent_state=value.get("agent_state"), native_id=value.get("native_id"),
        transcript_path=value.get("transcript_path"), agent_answers=answers,
    )  # fmt: skip


class RemoteSessions:
    """The sessions of the mesh's other computers, as this bot sees them (see the module)."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        #: session id -> the computer that owns it (sessions of other computers only)
        self.owners: dict[str, str] = {}

    def owner(self, session_id: str) -> str | None:
        """The computer of a session of another computer (None: this computer's, or unknown)."""
        return self.owners.get(session_id)

    # -- requests ------------------------------------------------------------------

    async def call(
        self, computer: str, method: str, path: str, *, body: object = None, session: str = "",
        limit: float = LIMIT, query: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:  # fmt: skip
        """One request to ``computer``'s API through the mesh: its status and body.

        Raises:
            RemoteUnavailableError.
        """
        from ..mesh import RedisUnavailableError
        from ..mesh.rpc import ComputerUnavailableError, UnknownComputerError, reply_body

        request: dict[str, Any] = {"method": method, "path": path, "query": query or {}}
        if body is not None:
            request["data_b64"] = base64.b64encode(json.dumps(body).encode()).decode()
            request["content_type"] = "application/json"
        try:
            reply = await self.mesh.request(computer, request, session=session, limit=limit)
        except (UnknownComputerError, ComputerUnavailableError, RedisUnavailableError) as exc:
            raise RemoteUnavailableError(f"computer {computer!r}: {exc or type(exc).__name__}") from None
        try:
            status = int(reply["status"])
            data = reply_body(reply)
        except (KeyError, TypeError, ValueError) as exc:
            message = f"computer {computer!r}: a reply that does not parse: {exc}"
            raise RemoteUnavailableError(message) from None
        return status, data

    async def _ok(
        self, session_id: str, method: str, path: str, body: object = None, limit: float = LIMIT,
        query: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:  # fmt: skip
        computer = self.owners.get(session_id)
        if computer is None:
            raise UnknownSessionError(session_id)
        status, data = await self.call(
            computer, method, f"/v1/sessions/{session_id}{path}", body=body, session=session_id, limit=limit,
            query=query,
        )  # fmt: skip
        if status == 404 and _code(data) != "no_answer":
            raise UnknownSessionError(session_id)
        if status >= 400:
            raise RemoteRefusedError(status, _message(data))
        return status, data

    async def get(self, session_id: str) -> SessionRecord:
        """Raises: UnknownSessionError, RemoteRefusedError, RemoteUnavailableError."""
        _, data = await self._ok(session_id, "GET", "")
        try:
            return record_from(json.loads(data))
        except ValueError as exc:
            message = f"session {session_id}: a record that does not parse: {exc}"
            raise RemoteUnavailableError(message) from None

    async def screen(self, session_id: str) -> str:
        _, data = await self._ok(session_id, "GET", "/screen")
        try:
            text = json.loads(data)["text"]
        except (ValueError, KeyError, TypeError):
            text = None
        if not isinstance(text, str):
            raise RemoteUnavailableError(f"session {session_id}: a screen that does not parse")
        return text

    async def send_text(self, session_id: str, text: str, *, enter: bool) -> None:
        await self._ok(session_id, "POST", "/input", {"text": text, "enter": enter})

    async def send_keys(self, session_id: str, keys: list[str]) -> None:
        await self._ok(session_id, "POST", "/keys", {"keys": keys})

    async def kill(self, session_id: str) -> None:
        await self._ok(session_id, "DELETE", "")

    async def answer(self, session_id: str, turn: int) -> str | None:
        """The final answer of the agent's turn ``turn`` (None: the computer keeps none for
        it: it is too old, or was not kept).

        Raises:
            UnknownSessionError, RemoteRefusedError (e.g. 409 not_an_agent), RemoteUnavailableError.
        """
        try:
            _, data = await self._ok(session_id, "GET", "/agent/answer", query={"turn": str(turn)})
        except RemoteRefusedError as exc:
            if exc.status == 404:
                return None
            raise
        try:
            value = json.loads(data)
            text, said = value["text"], value["turn"]
        except (ValueError, KeyError, TypeError):
            text = said = None
        if not isinstance(text, str) or said != turn:
            raise RemoteUnavailableError(f"session {session_id}: an answer that does not parse")
        return text[:ANSWER_LIMIT]

    async def submit_prompt(self, session_id: str, text: str) -> bool:
        """A verified prompt; True when confirmed, False when queued behind a busy turn.

        Raises:
            RemoteRefusedError: e.g. 409 prompt_not_confirmed; RemoteUnavailableError.
        """
        status, _ = await self._ok(session_id, "POST", "/prompt", {"text": text}, PROMPT_LIMIT)
        return status == 204

    async def everywhere(self) -> tuple[list[SessionRecord], list[str]]:
        """Every other online computer's sessions (recorded as theirs), and the computers that
        could not be asked."""
        from ..mesh import RedisUnavailableError

        found: list[SessionRecord] = []
        failed: list[str] = []
        try:
            computers = await self.mesh.computers()
        except RedisUnavailableError as exc:
            log.warning("the other computers could not be listed: %s", exc)
            return [], ["(Redis)"]
        others = [c.name for c in computers if c.online and c.name != self.mesh.name]

        async def one(name: str) -> None:
            try:
                status, data = await self.call(name, "GET", "/v1/sessions")
                if status != 200:
                    raise RemoteRefusedError(status, _message(data))
                sessions = json.loads(data)["sessions"]
                records = [record_from(s) for s in sessions]
            except (RemoteUnavailableError, RemoteRefusedError, ValueError, KeyError, TypeError) as exc:
                log.warning("the sessions of computer %r could not be listed: %s", name, exc)
                failed.append(name)
                return
            for record in records:
                self.owners[record.id] = name
            found.extend(records)

        async with trio.open_nursery() as nursery:
            for name in others:
                nursery.start_soon(one, name)
        found.sort(key=lambda r: (r.created_at, r.id))
        return found, failed

    # -- events ----------------------------------------------------------------------

    async def follow(
        self,
        on_event: Callable[[str, SessionRecord], Awaitable[None]],
        *,
        poll: float = 2.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``on_event(kind, record)`` for every event of another computer's sessions, from
        now on, until cancelled. Started once "now" is fixed (each known computer's stream's
        last id; a listing made after that misses no event). Computers that join later are
        followed from when they are first seen; entries that fail verification are dropped and
        counted by the mesh."""
        from ..mesh import RedisUnavailableError
        from ..mesh.computers import EventStreams

        mesh = self.mesh
        streams = EventStreams(mesh)
        looked_at = -poll
        backoff = Backoff(0.1, 2.0)
        started = False
        while True:
            try:
                if trio.current_time() - looked_at >= poll:
                    looked_at = trio.current_time()
                    await streams.follow(c.name for c in await mesh.computers() if c.name != mesh.name)
                if not started:
                    started = True
                    task_status.started()
                if not streams.following:
                    await trio.sleep(poll)
                    continue
                events = await streams.read(block=poll)
                backoff.reset()
            except RedisUnavailableError as exc:
                if not started:  # (not ready to follow: the listing is all there is for now)
                    started = True
                    task_status.started()
                log.info("following the other computers' events: %s; retrying", exc)
                await backoff.sleep()
                continue
            for computer, kind, session in events:
                try:
                    record = record_from(session)
                except ValueError as exc:
                    mesh.drops.drop("event", "malformed", f"{computer} event: {exc}")
                    continue
                self.owners[record.id] = computer
                await on_event(kind, record)


def _code(data: bytes) -> str | None:
    """The code of an API error body (None: not one)."""
    try:
        code = json.loads(data)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None


def _message(data: bytes) -> str:
    """The message of an API error body (or the body itself, cut short)."""
    try:
        error = json.loads(data)["error"]
        return str(error.get("message") or error.get("code"))[:500]
    except (ValueError, KeyError, TypeError, AttributeError):
        return data.decode("utf-8", "replace")[:500] or "refused"
