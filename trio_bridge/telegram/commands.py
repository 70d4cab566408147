"""What users send: commands, text for a session, taps on a question's buttons.

Every update is checked at this door: only the configured forum group (and private chats)
are served, only ``telegram_users`` act (others are ignored, logged and counted), edited
messages are not subscribed to (an edit would run a command twice). Work that takes a while
(a prompt being verified, a session starting) runs beside the poller, which goes on.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..agents import AgentState
from ..sessions import SessionEndedError, SessionState, UnknownSessionError
from ..sessions.manager import (
    AgentStart,
    NotAnAgentError,
    PromptNotConfirmedError,
    PromptQueuedError,
    UnknownAgentError,
)
from ..tmux import InvalidKeyError, InvalidTextError
from ._text import state_of, status_text
from .api import BotApiError, NetworkError
from .keyboard import parse_callback
from .remote import RemoteRefusedError, RemoteUnavailableError

if TYPE_CHECKING:
    from .bot import TelegramBot

__all__ = ["HELP", "handle_update"]

log = logging.getLogger(__name__)

HELP = """trio-bridge: your terminal sessions, one topic each.

In the General topic (or a private chat with the bot):
/new AGENT [cwd=DIR] [model=NAME] - start an agent session (e.g. /new claude cwd=~/src/app)
/new COMMAND... [cwd=DIR] - start a command (e.g. /new bash)
/ls - the sessions and their states
/help - this

In a session's topic:
text - a prompt to its agent (you are told whether it was taken), a line to a shell
/screen - its screen now
/keys NAME... - press keys (Enter, Escape, C-c, Up, Tab, ...)
/kill - end it
When an agent asks something, tap one of the buttons under its question."""

QUEUED = "⏳ The agent is busy: the prompt is queued and runs when its turn ends (do not send it again)."

#: the errors a user's request may meet, told to the user as they are
_USER_ERRORS = (
    UnknownSessionError, SessionEndedError, NotAnAgentError, PromptNotConfirmedError, UnknownAgentError,
    InvalidTextError, InvalidKeyError, RemoteRefusedError, RemoteUnavailableError,
)  # fmt: skip


async def handle_update(bot: TelegramBot, update: dict[str, Any]) -> None:
    """One update from getUpdates (quickly: long work is spawned)."""
    if isinstance(update.get("message"), dict):
        await _message(bot, update["message"])
    elif isinstance(update.get("callback_query"), dict):
        await _callback(bot, update["callback_query"])


def _in_our_chat(bot: TelegramBot, chat: object) -> int | None:
    """The chat's id if we serve it: the forum group, or a private chat."""
    if not isinstance(chat, dict) or not isinstance(chat.get("id"), int):
        return None
    if chat["id"] == bot.chat_id or chat.get("type") == "private":
        return int(chat["id"])
    log.info("ignored an update from chat %s (not telegram_chat)", chat["id"])
    return None


async def _message(bot: TelegramBot, message: dict[str, Any]) -> None:
    chat_id = _in_our_chat(bot, message.get("chat"))
    text = message.get("text")
    if chat_id is None or not isinstance(text, str) or not bot.allowed(message.get("from")):
        return
    thread_id: int | None = None
    if (
        chat_id == bot.chat_id
        and message.get("is_topic_message")
        and isinstance(message.get("message_thread_id"), int)
    ):
        thread_id = int(message["message_thread_id"])
    session_id = bot.store.session_of(chat_id, thread_id) if thread_id is not None else None
    if text.startswith("/"):
        head, *more = text.split(maxsplit=1)
        rest = more[0] if more else ""
        command, _, addressee = head[1:].partition("@")
        if addressee and bot.username and addressee.lower() != bot.username.lower():
            return  # meant for another bot in the group
        bot.spawn(_command, bot, chat_id, thread_id, session_id, command.lower(), rest.strip())
    elif session_id is not None:
        bot.spawn(_input, bot, chat_id, thread_id, session_id, text)
    else:
        where = "This topic is not a session's" if thread_id is not None else "This is not a session's topic"
        bot.spawn(bot.reply, chat_id, thread_id, f"{where}: nothing was sent. /help says more.")


async def _command(
    bot: TelegramBot, chat_id: int, thread_id: int | None, session_id: str | None, command: str, rest: str
) -> None:
    try:
        reply, html = await _run_command(bot, session_id, command, rest)
    except _USER_ERRORS as exc:
        reply, html = f"Not done: {exc}", False
    except (OSError, ValueError) as exc:
        reply, html = f"Not done: {exc}", False
    if reply:
        await bot.reply(chat_id, thread_id, reply, html=html)


async def _run_command(bot: TelegramBot, session_id: str | None, command: str, rest: str) -> tuple[str, bool]:
    manager = bot.manager
    if command in ("help", "start"):
        return HELP, False
    if command == "ls":
        records = await manager.store.all([SessionState.STARTING, SessionState.RUNNING])
        lines = [f"{r.id}  {state_of(r)}  {r.agent or 'shell'}  {r.title}" for r in records]
        unreachable: list[str] = []
        if bot.remote is not None:
            # (with a mesh, every computer's: "computer: id state agent title")
            lines = [f"{bot.computer}: {line}" for line in lines]
            others, unreachable = await bot.remote.everywhere()
            lines += [
                f"{bot.owner(r.id)}: {r.id}  {state_of(r)}  {r.agent or 'shell'}  {r.title}"
                for r in others
                if not r.state.ended
            ]
        lines += [f"({name}: not reachable)" for name in unreachable]
        if not lines:
            return "No sessions running.", False
        return "\n".join(lines)[:4000], False
    if command == "new":
        return await _new(bot, rest), False
    if session_id is None:
        return f"/{command} works in a session's topic. /help says more.", False
    remote = bot.remote if bot.owner(session_id) else None
    if command == "screen":
        record = await bot.get(session_id)
        return status_text(record, await bot.screen(session_id), lines=60), True
    if command == "keys":
        keys = rest.split()
        if not keys:
            return "Say which keys: /keys Enter, /keys C-c, /keys Up Up Enter", False
        if remote is not None:
            await remote.send_keys(session_id, keys)  # (its computer checks the names)
        else:
            await manager.send_keys(session_id, keys)
        return "", False
    if command == "kill":
        if remote is not None:
            await remote.kill(session_id)
        else:
            await manager.kill(session_id)
        return "", False  # its end is posted like any other
    return f"Unknown command /{command}. /help says more.", False


async def _new(bot: TelegramBot, rest: str) -> str:
    """``/new AGENT|COMMAND... [cwd=DIR] [model=NAME]``: start a session (its topic follows)."""
    words = shlex.split(rest)
    options: dict[str, str] = {}
    argv: list[str] = []
    for word in words:
        key, sep, value = word.partition("=")
        if sep and key in ("cwd", "model"):
            options[key] = value
        else:
            argv.append(word)
    if not argv:
        return "Say what to start: /new AGENT [cwd=DIR] [model=NAME], or /new COMMAND..."
    cwd = Path(options.get("cwd") or "~").expanduser()  # noqa: ASYNC240 - no I/O: the home's name
    if not cwd.is_absolute() or not await trio.Path(cwd).is_dir():
        return f"Not done: {cwd} is not a directory (cwd= takes an absolute path or ~/...)"
    manager = bot.manager
    profile = manager.agent_profiles.get(argv[0])
    agent = None
    if profile is not None:
        if argv[1:]:
            return "Not done: an agent takes no arguments here (send the prompt in its topic)"
        agent = AgentStart(profile, model=options.get("model"))
    elif "model" in options:
        known = ", ".join(sorted(manager.agent_profiles))
        return f"Not done: {argv[0]!r} is not an agent profile (known: {known})"
    # as the API does: hooks (`trio-bridge hook`) find the daemon through this
    env = {"TRIO_BRIDGE_API_SOCKET": str(bot.settings.api_socket)}
    record = await manager.create(argv, cwd=cwd, env=env, origin="telegram", agent=agent)
    return f"Started {record.id} ({record.title}): its topic is coming."


async def _input(bot: TelegramBot, chat_id: int, thread_id: int | None, session_id: str, text: str) -> None:
    """Text in a session's topic: a verified prompt to its agent, or a line to its shell."""
    manager = bot.manager
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > bot.settings.max_input_bytes:
        await bot.reply(
            chat_id, thread_id, f"Not sent: {size} bytes, at most {bot.settings.max_input_bytes}."
        )
        return
    remote = bot.remote if bot.owner(session_id) else None
    try:
        record = await bot.get(session_id)
        if record.agent is None:
            if remote is not None:
                await remote.send_text(session_id, text, enter=True)
            else:
                await manager.send_text(session_id, text, enter=True)
            return
        if remote is not None:
            if not await remote.submit_prompt(session_id, text):
                await bot.reply(chat_id, thread_id, QUEUED)
                return
        else:
            await manager.submit_prompt(session_id, text)
    except PromptQueuedError:
        await bot.reply(chat_id, thread_id, QUEUED)
        return
    except RemoteRefusedError as exc:
        await bot.reply(chat_id, thread_id, f"Not sent: {exc}")
        return
    except PromptNotConfirmedError:
        await bot.reply(chat_id, thread_id, "⚠️ Pasted, but the agent showed no sign of taking it (Enter "
                        "was pressed twice). /screen shows where it is.")  # fmt: skip
        return
    except _USER_ERRORS as exc:
        await bot.reply(chat_id, thread_id, f"Not sent: {exc}")
        return
    await bot.reply(chat_id, thread_id, "✅ The agent took the prompt.")


async def _callback(bot: TelegramBot, query: dict[str, Any]) -> None:
    """A tap on a question's button: type the choice, acknowledge the tap."""
    if not bot.allowed(query.get("from")) or not isinstance(query.get("id"), str):
        return
    message: dict[str, Any] = query["message"] if isinstance(query.get("message"), dict) else {}
    chat_id = _in_our_chat(bot, message.get("chat"))
    parsed = parse_callback(query.get("data"))
    if chat_id is None or parsed is None:
        bot.spawn(_answer_tap, bot, query["id"], "Not understood.")
        return
    bot.spawn(_tap, bot, query["id"], message.get("message_id"), *parsed)


async def _tap(bot: TelegramBot, query_id: str, message_id: object, session_id: str, key: str) -> None:
    manager = bot.manager
    if bot.open_question(session_id) != message_id:
        await _answer_tap(bot, query_id, "This question is no longer open.")
        return
    remote = bot.remote if bot.owner(session_id) else None
    if remote is not None:
        try:
            waiting = (await remote.get(session_id)).agent_state == AgentState.WAITING_FOR_INPUT
        except _USER_ERRORS:
            waiting = False
    else:
        tracker = manager.agent(session_id)
        waiting = tracker is not None and tracker.state is AgentState.WAITING_FOR_INPUT
    if not waiting:
        await _answer_tap(bot, query_id, "The agent no longer waits for an answer.")
        return
    try:
        if remote is not None:
            # the API presses named keys only (no digit): option N is N-1 times Down from the
            # first, highlighted when a dialog opens, then Enter
            keys = ["Down"] * (int(key) - 1) + ["Enter"] if key.isdigit() and key != "0" else [key]
            await remote.send_keys(session_id, keys)
        elif key.isdigit():
            # typed as a key press (send_text would paste it: a dialog takes no paste)
            await manager.send_bytes(session_id, key.encode())
        else:
            await manager.send_keys(session_id, [key])
    except _USER_ERRORS as exc:
        await _answer_tap(bot, query_id, f"Not sent: {exc}")
        return
    bot._close_question(session_id, key)
    await _answer_tap(bot, query_id, f"Sent {key}.")


async def _answer_tap(bot: TelegramBot, query_id: str, text: str) -> None:
    """answerCallbackQuery: not a chat's message (no chat's pace), bounded by the client."""
    try:
        await bot.api.call("answerCallbackQuery", {"callback_query_id": query_id, "text": text})
    except (BotApiError, NetworkError) as exc:
        log.info("a tap was not acknowledged: %s", exc)
