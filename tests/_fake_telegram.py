"""A fake Telegram Bot API on loopback, stateful like Telegram, for the Telegram front end's tests.

A quart-trio app on hypercorn (127.0.0.1, a free port) answering ``/bot<token>/<method>``
with JSON or multipart bodies, as Telegram does. It keeps forum topics, messages with their
edit history and keyboards, documents, an update queue the test feeds (``say``, ``tap``),
and every call made. It answers Telegram's errors: a per-chat 429 with ``retry_after``
(``penalize``, or ``min_interval`` enforced), "message is not modified", "message is too long"
(counted as Telegram does, in UTF-16 units of the text without its HTML tags), "can't parse
entities" for bad HTML, the 64-byte callback data limit, "message thread not found" for a
deleted topic, 409 for a second poller, 401 for another token.
"""

from __future__ import annotations

import html.parser
import itertools
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import request
from quart_trio import QuartTrio

FORUM = -1001234567890
USER = 4242
STRANGER = 666
_ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "s", "code", "pre", "a", "blockquote", "tg-spoiler"}


@attrs.define
class Message:
    chat_id: int
    message_id: int
    thread_id: int | None
    text: str
    reply_markup: Any = None
    history: list[str] = attrs.field(factory=list)
    document: bytes | None = None
    caption: str | None = None


@attrs.frozen
class Call:
    method: str
    params: dict[str, Any]
    at: float
    #: the error code answered, 0 for success
    error: int


class _Plain(html.parser.HTMLParser):
    """The text of an HTML message as Telegram shows it; raises on tags it refuses."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text = ""
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag not in _ALLOWED_TAGS:
            raise ValueError(f"unsupported start tag {tag!r}")
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            raise ValueError(f"unexpected end tag {tag!r}")

    def handle_data(self, data: str) -> None:
        self.text += data


def plain_text(text: str, parse_mode: str | None) -> str:
    if parse_mode != "HTML":
        return text
    parser = _Plain()
    parser.feed(text)
    parser.close()
    if parser.open:
        raise ValueError(f"unclosed tag {parser.open[-1]!r}")
    return parser.text


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class ApiError(Exception):
    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        self.code = code
        self.description = description
        self.retry_after = retry_after


class FakeTelegram:
    """The fake's state; the test reads and changes it directly (one event loop)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.url = ""
        self.calls: list[Call] = []
        self.messages: dict[tuple[int, int], Message] = {}
        self.topics: dict[tuple[int, int], str] = {}
        self.topic_names: dict[tuple[int, int], list[str]] = {}
        self.deleted_topics: set[tuple[int, int]] = set()
        self.updates: list[dict[str, Any]] = []
        self.callback_answers: list[dict[str, Any]] = []
        self.penalties: dict[int, float] = {}
        #: Telegram's flood limit on a group, enforced when set: at most COUNT calls in any
        #: WINDOW seconds (Telegram's is about 20 a minute); beyond, a 429
        self.group_limit: tuple[int, float] | None = None
        self._recent: dict[int, list[float]] = {}
        self._flood_after: dict[int, tuple[int, float]] = {}
        #: chats whose topics are on (forum supergroups)
        self.forums: set[int] = {FORUM}
        self._ids = itertools.count(1)
        self._update_ids = itertools.count(100)
        self._threads = itertools.count(1000)
        self._changed = trio.Event()
        self.polling = 0
        #: the longest a getUpdates waits here (tests need no 25 s polls)
        self.max_poll = 1.0
        self.changed = trio.Event()

    # -- what the test does --------------------------------------------------------

    def _update(self, **body: Any) -> int:
        update_id = next(self._update_ids)
        self.updates.append({"update_id": update_id, **body})
        self._changed.set()
        return update_id

    def say(self, text: str, *, thread_id: int | None = None, user: int = USER, chat_id: int = FORUM) -> int:
        """A user writes ``text`` (in a topic, or General / a private chat)."""
        message: dict[str, Any] = {
            "message_id": next(self._ids), "date": 0, "text": text,
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
            "from": {"id": user, "is_bot": False, "first_name": "U"},
        }  # fmt: skip
        if thread_id is not None:
            message.update(message_thread_id=thread_id, is_topic_message=True)
        return self._update(message=message)

    def tap(self, message: Message, data: str, *, user: int = USER) -> int:
        """A user taps the button with ``data`` under ``message``."""
        return self._update(
            callback_query={
                "id": f"cb{next(self._ids)}", "data": data, "chat_instance": "x",
                "from": {"id": user, "is_bot": False, "first_name": "U"},
                "message": {
                    "message_id": message.message_id, "date": 0, "text": message.text,
                    "chat": {"id": message.chat_id, "type": "supergroup"},
                },
            }
        )  # fmt: skip

    def penalize(self, chat_id: int, seconds: float) -> None:
        """Flood control: every call to this chat gets a 429 for ``seconds``."""
        self.penalties[chat_id] = trio.current_time() + seconds

    def flood_after(self, chat_id: int, sends: int, seconds: float) -> None:
        """Flood control that starts after ``sends`` more messages to this chat."""
        self._flood_after[chat_id] = (sends, seconds)

    def delete_topic(self, chat_id: int, thread_id: int) -> None:
        """The user deletes a topic (its messages go with it)."""
        self.topics.pop((chat_id, thread_id), None)
        self.deleted_topics.add((chat_id, thread_id))
        for key, message in list(self.messages.items()):
            if message.chat_id == chat_id and message.thread_id == thread_id:
                del self.messages[key]

    def in_topic(self, chat_id: int, thread_id: int) -> list[Message]:
        return sorted(
            (m for m in self.messages.values() if m.chat_id == chat_id and m.thread_id == thread_id),
            key=lambda m: m.message_id,
        )

    def thread_named(self, part: str, chat_id: int = FORUM) -> int | None:
        for (chat, thread), name in self.topics.items():
            if chat == chat_id and part in name:
                return thread
        return None

    def errors(self, code: int) -> list[Call]:
        return [c for c in self.calls if c.error == code]

    async def wait_for(self, predicate: Any, what: str = "") -> Any:
        """Wait (the caller bounds it) until ``predicate()`` is truthy; return its value."""
        while not (value := predicate()):
            await self.changed.wait()
        return value

    # -- the API -----------------------------------------------------------------

    def _chat_gate(self, chat_id: int) -> None:
        now = trio.current_time()
        until = self.penalties.get(chat_id, 0.0)
        if now < until:
            raise ApiError(
                429, f"Too Many Requests: retry after {math.ceil(until - now)}", math.ceil(until - now)
            )
        if self.group_limit is not None and chat_id < 0:
            count, window = self.group_limit
            recent = self._recent.setdefault(chat_id, [])
            recent[:] = [t for t in recent if t > now - window]
            if len(recent) >= count:
                wait = math.ceil(recent[0] + window - now)
                raise ApiError(429, f"Too Many Requests: retry after {wait}", wait)
            recent.append(now)

    def _message_out(self, m: Message) -> dict[str, Any]:
        out: dict[str, Any] = {
            "message_id": m.message_id,
            "chat": {"id": m.chat_id},
            "date": 0,
            "text": m.text,
        }
        if m.thread_id is not None:
            out["message_thread_id"] = m.thread_id
        return out

    def _check_text(self, text: object, parse_mode: object) -> str:
        if not isinstance(text, str) or not text:
            raise ApiError(400, "Bad Request: message text is empty")
        try:
            shown = plain_text(text, parse_mode if isinstance(parse_mode, str) else None)
        except ValueError as exc:
            raise ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
        if units(shown) > 4096:
            raise ApiError(400, "Bad Request: message is too long")
        return text

    def _check_markup(self, markup: object) -> Any:
        if markup is None:
            return None
        if isinstance(markup, str):
            markup = json.loads(markup)
        for row in markup.get("inline_keyboard", []):
            for button in row:
                if len(str(button.get("callback_data", "")).encode()) > 64:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        return markup

    def _thread(self, chat_id: int, params: dict[str, Any]) -> int | None:
        thread = params.get("message_thread_id")
        if thread is None:
            return None
        thread = int(thread)
        if (chat_id, thread) not in self.topics:
            raise ApiError(400, "Bad Request: message thread not found")
        return thread

    async def call(self, method: str, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        chat_id = int(params["chat_id"]) if "chat_id" in params else None
        if chat_id is not None and method != "answerCallbackQuery":
            self._chat_gate(chat_id)
        if method == "getMe":
            return {"id": 1, "is_bot": True, "first_name": "Bridge", "username": "bridge_bot"}
        if method == "getUpdates":
            return await self._get_updates(params)
        assert chat_id is not None or method == "answerCallbackQuery", method
        if method == "createForumTopic":
            if chat_id not in self.forums:
                raise ApiError(400, "Bad Request: the chat is not a forum")
            name = str(params["name"])
            if not 1 <= units(name) <= 128:
                raise ApiError(400, "Bad Request: TOPIC_NAME_INVALID")
            thread = next(self._threads)
            self.topics[(chat_id, thread)] = name  # type: ignore[index]
            self.topic_names[(chat_id, thread)] = [name]  # type: ignore[index]
            return {"message_thread_id": thread, "name": name, "icon_color": 0}
        if method == "editForumTopic":
            key = (chat_id, int(params["message_thread_id"]))
            if key not in self.topics:
                raise ApiError(400, "Bad Request: message thread not found")
            if self.topics[key] == params["name"]:  # type: ignore[index]
                raise ApiError(400, "Bad Request: TOPIC_NOT_MODIFIED")
            self.topics[key] = str(params["name"])  # type: ignore[index]
            self.topic_names[key].append(str(params["name"]))  # type: ignore[index]
            return True
        if method == "sendMessage":
            text = self._check_text(params.get("text"), params.get("parse_mode"))
            markup = self._check_markup(params.get("reply_markup"))
            message = Message(chat_id, next(self._ids), self._thread(chat_id, params), text, markup, [text])  # type: ignore[arg-type]
            self.messages[(message.chat_id, message.message_id)] = message
            if chat_id in self._flood_after:
                sends, seconds = self._flood_after.pop(chat_id)  # type: ignore[arg-type]
                if sends > 1:
                    self._flood_after[chat_id] = (sends - 1, seconds)  # type: ignore[index]
                else:
                    self.penalize(chat_id, seconds)  # type: ignore[arg-type]
            return self._message_out(message)
        if method == "sendDocument":
            if "document" not in files:
                raise ApiError(400, "Bad Request: there is no document in the request")
            caption = str(params.get("caption") or "")
            if units(caption) > 1024:
                raise ApiError(400, "Bad Request: message caption is too long")
            message = Message(chat_id, next(self._ids), self._thread(chat_id, params), "", None, [],  # type: ignore[arg-type]
                              files["document"], caption)  # fmt: skip
            self.messages[(message.chat_id, message.message_id)] = message
            return self._message_out(message)
        if method == "editMessageText":
            found = self.messages.get((chat_id, int(params["message_id"])))  # type: ignore[arg-type]
            if found is None:
                raise ApiError(400, "Bad Request: message to edit not found")
            text = self._check_text(params.get("text"), params.get("parse_mode"))
            markup = self._check_markup(params.get("reply_markup"))
            if text == found.text and markup == found.reply_markup:
                raise ApiError(
                    400,
                    "Bad Request: message is not modified: specified new message content and reply markup "
                    "are exactly the same as a current content and reply markup of the message",
                )
            found.text, found.reply_markup = text, markup
            found.history.append(text)
            return self._message_out(found)
        if method == "answerCallbackQuery":
            self.callback_answers.append(params)
            return True
        raise ApiError(404, "Not Found")

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.polling:
            raise ApiError(
                409,
                "Conflict: terminated by other getUpdates request; "
                "make sure that only one bot instance is running",
            )
        offset = int(params.get("offset") or 0)
        self.updates = [u for u in self.updates if u["update_id"] >= offset]
        self.polling += 1
        try:
            with trio.move_on_after(min(float(params.get("timeout") or 0), self.max_poll)):
                while not self.updates:
                    self._changed = trio.Event()
                    await self._changed.wait()
        finally:
            self.polling -= 1
        return list(self.updates)

    def app(self) -> QuartTrio:
        app = QuartTrio(__name__)

        @app.post("/bot<token>/<method>")
        async def endpoint(token: str, method: str) -> tuple[dict[str, Any], int]:
            files: dict[str, bytes] = {}
            if request.mimetype == "application/json":
                params = await request.get_json() or {}
            else:
                form = await request.form
                params = dict(form)
                for key in ("reply_markup", "allowed_updates"):
                    if isinstance(params.get(key), str):
                        params[key] = json.loads(params[key])
                for name, storage in (await request.files).items():
                    files[name] = storage.read()
            if token != self.token:
                self.calls.append(Call(method, params, trio.current_time(), 401))
                return {"ok": False, "error_code": 401, "description": "Unauthorized"}, 401
            try:
                result = await self.call(method, params, files)
            except ApiError as exc:
                self.calls.append(Call(method, params, trio.current_time(), exc.code))
                self._signal()
                body: dict[str, Any] = {"ok": False, "error_code": exc.code, "description": exc.description}
                if exc.retry_after is not None:
                    body["parameters"] = {"retry_after": exc.retry_after}
                return body, exc.code
            self.calls.append(Call(method, params, trio.current_time(), 0))
            self._signal()
            return {"ok": True, "result": result}, 200

        return app

    def _signal(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


@asynccontextmanager
async def open_fake_telegram(token: str) -> AsyncIterator[FakeTelegram]:
    """The fake, serving on 127.0.0.1 (a free port) until the block ends."""
    fake = FakeTelegram(token)
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, fake.app(), config)
        fake.url = binds[0]
        yield fake
        nursery.cancel_scope.cancel()
