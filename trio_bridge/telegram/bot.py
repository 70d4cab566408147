"""The Telegram front end of one daemon: sessions shown in forum topics, and driven from them.

```
serve_telegram (a supervised service of the daemon; only with telegram_token set)
├── open_telegram_store(state_dir/telegram.db)   offset, topics, outbox
├── BotApi (httpx)                                every call bounded
└── nursery
    ├── follow the manager's events               topics, status, answers, keyboards
    ├── with a mesh: the other computers' events  their sessions too (see .remote),
    │                                             their agents' answers fetched into the outbox
    ├── one status task per live session          its status message, edited in place
    ├── deliver the outbox                        final answers and ends, once, in order
    ├── Poller                                    getUpdates -> handle (commands, text, taps)
    └── short tasks                               prompts being verified, replies
```

It talks to the daemon's own :class:`SessionManager` in the same process (no HTTP to itself). The
other computers' sessions (with a mesh) go through :class:`.remote.RemoteSessions`.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._backoff import Backoff
from ..agents import AgentState
from ..config import Settings
from ..sessions import (
    ANSWERS_KEPT,
    EventKind,
    SessionEvent,
    SessionManager,
    SessionRecord,
    UnknownSessionError,
)
from ._text import MAX_PARTS, MESSAGE_LIMIT, ended_text, split_message, status_text, units
from .api import BotApi, BotApiError, NetworkError
from .keyboard import choices_on_screen, keyboard
from .lanes import Lanes, Priority
from .poller import Poller
from .remote import RemoteRefusedError, RemoteSessions, RemoteUnavailableError
from .store import OutboxEntry, TelegramStore, open_telegram_store
from .topics import TopicGoneError, Topics

if TYPE_CHECKING:
    from ..mesh import Mesh

__all__ = ["TelegramBot", "serve_telegram"]

log = logging.getLogger(__name__)

_SENT = (BotApiError, NetworkError, TopicGoneError)


@attrs.define
class _Status:
    """One session's status message: what it last said, and a wake-up for changes."""

    changed: trio.Event = attrs.field(factory=trio.Event)
    text: str | None = None


class TelegramBot:
    """See the module docstring. ``run`` serves until cancelled."""

    def __init__(
        self,
        settings: Settings,
        manager: SessionManager,
        api: BotApi,
        store: TelegramStore,
        computer: str,
        *,
        lanes: Lanes | None = None,
        remote: RemoteSessions | None = None,
    ) -> None:
        assert settings.telegram_chat is not None
        self.settings = settings
        self.manager = manager
        self.api = api
        self.store = store
        self.computer = computer
        self.chat_id = settings.telegram_chat
        self.users = frozenset(settings.telegram_users)
        self.lanes = lanes or Lanes(api)
        #: with a mesh: the other computers' sessions (this bot shows them too)
        self.remote = remote
        self.topics = Topics(
            store, self.lanes, self.chat_id, computer, remote.owner if remote is not None else None
        )
        self.poller = Poller(api, store, self._handle)
        #: seconds between looks at a live session's screen (status edits coalesce meanwhile)
        self.status_interval = 2.0
        #: seconds before a status that Telegram refused is tried again
        self.retry_after_failure = 30.0
        self.username = ""
        #: updates from users not in telegram_users (ignored)
        self.ignored = 0
        self._status: dict[str, _Status] = {}
        self._final_shown: set[str] = set()
        self._strangers: dict[
            object, int
        ] = {}  # updates ignored, per user id  # ended sessions whose last status is shown
        self._answers: dict[str, int] = {}  # per agent session: answers already queued
        self._keyboards: dict[str, int] = {}  # per session: the message of its open question
        # other computers' agent sessions: the last answer heard of (their records'
        # agent_answers), one lock each (one fetch at a time), and those with a fetching task
        self._remote_turns: dict[str, int] = {}
        self._answer_locks: dict[str, trio.Lock] = {}
        self._fetching: set[str] = set()
        self._outbox_changed = trio.Event()
        self._nursery: trio.Nursery | None = None

    # -- running ------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[TelegramBot] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            events = self.manager.subscribe()
            for record in await self.manager.store.all():
                if not record.state.ended:
                    self._watch(record.id)
                    # answers given before we started were for whoever was there then (after a
                    # daemon restart there are none: the outbox holds the undelivered ones)
                    if (tracker := self.manager.agent(record.id)) is not None:
                        self._answers[record.id] = tracker.answers
            known = {r.id for r in await self.manager.store.all()}
            complete = True
            if self.remote is not None:
                # following first: a session made while the others are listed is not missed
                await nursery.start(partial(self.remote.follow, self._on_remote_event))
                records, failed = await self.remote.everywhere()
                complete = not failed
                known |= {r.id for r in records}
                for record in records:
                    await self._remote_answers_at_start(record)  # (noted before its status looks)
                    if not record.state.ended:
                        self._watch(record.id)
            if complete:  # (a computer not heard from keeps its sessions' topics)
                await self.store.forget_topics(known)
            nursery.start_soon(self._follow_events, events)
            nursery.start_soon(self._deliver_outbox)
            nursery.start_soon(self._poll)
            task_status.started(self)

    async def _poll(self) -> None:
        try:
            me = await self.api.call("getMe")
            self.username = str(me.get("username") or "") if isinstance(me, dict) else ""
        except (BotApiError, NetworkError) as exc:
            log.warning("getMe failed: %s (polling anyway)", exc)
        await self.poller.run()

    async def _handle(self, update: dict[str, Any]) -> None:
        from .commands import handle_update

        await handle_update(self, update)

    def spawn(self, fn: Any, *args: Any) -> None:
        """Run a short task (a reply, a prompt being verified) beside the poller."""
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    def allowed(self, user: object) -> bool:
        """Whether this Telegram ``from`` object is one of telegram_users; counts and logs others."""
        user_id = user.get("id") if isinstance(user, dict) else None
        if isinstance(user_id, int) and user_id in self.users:
            return True
        self.ignored += 1
        # logged the first time, then every 100th (a stranger's flood does not flood the log)
        seen = self._strangers[user_id] = self._strangers.get(user_id, 0) + 1
        if seen % 100 == 1:
            log.info("ignored an update from user %s (not in telegram_users; %d so far)", user_id, seen)
        return False

    # -- events -------------------------------------------------------------------

    async def _follow_events(self, events: trio.MemoryReceiveChannel[SessionEvent]) -> None:
        """The manager's events, resubscribing if cut off (fell behind, manager restarted):
        then every live session is looked at again."""
        while True:
            async with events:
                async for event in events:
                    await self._on_event(event)
            await trio.sleep(0.5)
            events = self.manager.subscribe()
            for record in await self.manager.store.all():
                if not record.state.ended:
                    self._watch(record.id)

    async def _on_event(self, event: SessionEvent) -> None:
        record = event.record
        self._watch(record.id)
        if event.kind is EventKind.AGENT:
            if event.agent is AgentState.IDLE:
                await self._queue_answer(record)
            if event.agent is AgentState.WAITING_FOR_INPUT:
                if record.id not in self._keyboards:
                    self.spawn(self._ask, record.id)
            else:
                self._close_question(record.id)
        elif record.state.ended:
            await self._queue_answer(record)
            self._close_question(record.id)
            await self._enqueue(record.id, f"Session ended: {ended_text(record)}.")

    async def _on_remote_event(self, kind: str, record: SessionRecord) -> None:
        """An event of another computer's session: as :meth:`_on_event`; a new final answer
        (the record's ``agent_answers`` grew) is fetched from its computer (see
        :meth:`_take_remote_answers`), by a task of its own (the events go on meanwhile)."""
        self._watch(record.id)
        if not record.state.ended:
            # (any event: a daemon restarted after an answer whose event was lost adopts it)
            self._remote_answers(record)
        if kind == EventKind.AGENT:
            if record.agent_state == AgentState.WAITING_FOR_INPUT:
                if record.id not in self._keyboards:
                    self.spawn(self._ask, record.id)
            else:
                self._close_question(record.id)
        elif record.state.ended:
            self._close_question(record.id)
            if record.agent is not None and self._note_turn(record):
                # its last answers before its end (waited for: the end comes after them)
                try:
                    await self._take_remote_answers(record.id)
                except (RemoteUnavailableError, RemoteRefusedError, UnknownSessionError) as exc:
                    log.info("session %s: its agent's answers not fetched yet: %s", record.id, exc)
                    self._remote_answers(record)
            if record.id not in self._fetching:  # (its answers are all in: nothing more comes)
                self._remote_turns.pop(record.id, None)
                self._answer_locks.pop(record.id, None)
            await self._enqueue(record.id, f"Session ended: {ended_text(record)}.")

    # -- other computers' agents' final answers --------------------------------------

    def _note_turn(self, record: SessionRecord) -> bool:
        """Note the last answer another computer's agent gave (by its record); whether some
        answer is not queued yet."""
        turn = self._remote_turns[record.id] = max(self._remote_turns.get(record.id, 0), record.agent_answers)
        mark = self.store.answered(record.id)
        return mark is None or mark < turn

    def _remote_answers(self, record: SessionRecord) -> None:
        """Fetch the answers of another computer's agent not queued yet, in a task of its own
        (one per session at a time; it retries while the computer cannot be reached)."""
        if record.agent is None or not self._note_turn(record) or record.id in self._fetching:
            return
        self._fetching.add(record.id)
        self.spawn(self._remote_answers_task, record.id)

    async def _remote_answers_at_start(self, record: SessionRecord) -> None:
        """A session of another computer listed as the bot starts: its answers given while
        the bot was away (as noted here before) are fetched; a session never noted starts
        from its current answer (its earlier ones were for whoever was there then)."""
        if record.agent is None:
            return
        if self.store.answered(record.id) is None:
            await self.store.enqueue_answer(self.chat_id, record.id, record.agent_answers, None)
        self._remote_answers(record)

    async def _remote_answers_task(self, session_id: str) -> None:
        backoff = Backoff(1.0, 30.0)
        try:
            while True:
                try:
                    await self._take_remote_answers(session_id)
                except RemoteUnavailableError as exc:
                    log.info("session %s: its agent's answers not fetched yet: %s; retrying", session_id, exc)
                    await backoff.sleep()
                    continue
                except (UnknownSessionError, RemoteRefusedError) as exc:
                    log.warning("session %s: its agent's answers not fetched: %s", session_id, exc)
                    return
                backoff.reset()
                # (no checkpoint from this look to the end of the task: a turn noted meanwhile
                # starts a new one)
                if (self.store.answered(session_id) or 0) >= self._remote_turns.get(session_id, 0):
                    return
        finally:
            self._fetching.discard(session_id)

    async def _take_remote_answers(self, session_id: str) -> None:
        """Queue the answers another computer's agent gave since the last one queued (of the
        turns its computer still keeps; none kept: passed over), each fetched through the
        mesh and queued with its turn in one transaction: an event seen twice or replayed,
        or a restart, queues none twice. A session first heard of through an event starts
        from its newest answer.

        Raises:
            RemoteUnavailableError, RemoteRefusedError, UnknownSessionError.
        """
        assert self.remote is not None
        lock = self._answer_locks.setdefault(session_id, trio.Lock())
        async with lock:
            latest = self._remote_turns.get(session_id, 0)
            mark = self.store.answered(session_id)
            if mark is None:
                mark = max(0, latest - 1)
                await self.store.enqueue_answer(self.chat_id, session_id, mark, None)
            for turn in range(max(mark + 1, latest - ANSWERS_KEPT + 1), latest + 1):
                text = await self.remote.answer(session_id, turn)
                if text is None:
                    log.warning("session %s: its computer keeps no answer of turn %d", session_id, turn)
                if await self.store.enqueue_answer(self.chat_id, session_id, turn, text) and text is not None:
                    self._outbox_changed.set()

    # -- sessions, here or on another computer --------------------------------------

    def owner(self, session_id: str) -> str | None:
        """The other computer that owns the session (None: this computer's)."""
        return self.remote.owner(session_id) if self.remote is not None else None

    async def get(self, session_id: str) -> SessionRecord:
        """Raises: UnknownSessionError, RemoteRefusedError, RemoteUnavailableError."""
        if self.remote is not None and self.remote.owner(session_id):
            return await self.remote.get(session_id)
        return await self.manager.get(session_id)

    async def screen(self, session_id: str) -> str:
        if self.remote is not None and self.remote.owner(session_id):
            return await self.remote.screen(session_id)
        return await self.manager.screen(session_id)

    async def _queue_answer(self, record: SessionRecord) -> None:
        """The agent's final answer of a turn, queued once (a new one each time a turn-end
        hook reported one)."""
        tracker = self.manager.agent(record.id)
        if tracker is None or tracker.last_answer is None:
            return
        if self._answers.get(record.id, 0) >= tracker.answers:
            return
        self._answers[record.id] = tracker.answers
        await self._enqueue(record.id, tracker.last_answer)

    async def _enqueue(self, session_id: str | None, text: str) -> None:
        await self.store.enqueue(self.chat_id, session_id, text)
        self._outbox_changed.set()

    # -- status messages -----------------------------------------------------------

    def _watch(self, session_id: str) -> None:
        """Make sure the session has a status task; tell it something changed."""
        if session_id in self._final_shown:
            return
        status = self._status.get(session_id)
        if status is None:
            status = self._status[session_id] = _Status()
            self.spawn(self._status_loop, session_id, status)
        status.changed.set()

    async def _status_loop(self, session_id: str, status: _Status) -> None:
        """Keep the session's status message current until the session has ended and its last
        status is shown; an unchanged status is never sent again."""
        failed: str | None = None
        try:
            while True:
                with trio.move_on_after(self.status_interval):
                    await status.changed.wait()
                status.changed = trio.Event()
                try:
                    record = await self._show_status(session_id, status)
                except TopicGoneError:
                    return
                except UnknownSessionError:
                    return
                except (BotApiError, NetworkError, RemoteRefusedError, RemoteUnavailableError) as exc:
                    # (a group that is no forum, a bot without the right to manage topics: one
                    # line per new trouble, and a slower pace until it is fixed)
                    if str(exc) != failed:
                        log.warning("session %s: status not shown: %s", session_id, exc)
                        failed = str(exc)
                    await trio.sleep(self.retry_after_failure)
                    continue
                failed = None
                if self.owner(session_id) is not None:
                    # another computer's record, just fetched: an answer whose event was lost
                    # is found here (while the session lives)
                    self._remote_answers(record)
                try:
                    await self.topics.rename(record)
                except (BotApiError, NetworkError) as exc:
                    log.warning("session %s: topic not renamed: %s", session_id, exc)
                if record.state.ended:
                    self._final_shown.add(session_id)
                    return
        finally:
            self._status.pop(session_id, None)

    async def _show_status(self, session_id: str, status: _Status) -> SessionRecord:
        """Bring the status message up to date: edited in place, rendered within the chat's
        turn (so what goes is the latest), skipped when unchanged; a new message when there is
        none yet or it was deleted. Returns the session's record as shown.

        Raises:
            UnknownSessionError, TopicGoneError, BotApiError, NetworkError; for another
            computer's session RemoteRefusedError, RemoteUnavailableError.
        """
        if status.text is None and (kept := self.store.topic(session_id)) is not None:
            status.text = kept.status_text  # shown before a restart: not sent again
        record = await self.get(session_id)
        if status_text(record, await self.screen(session_id)) == status.text:
            return record  # unchanged: not even a turn is taken
        await self.topics.thread(record)  # made first (outside the turn: it takes one itself)
        lane = self.lanes.lane(self.chat_id)
        async with lane.turn(Priority.LOW):
            record = await self.get(session_id)
            text = status_text(record, await self.screen(session_id))
            topic = self.store.topic(session_id)
            if text == status.text or topic is None or topic.thread_id is None:
                return record
            if topic.status_message_id is not None:
                try:
                    await lane.send(
                        "editMessageText",
                        {"chat_id": self.chat_id, "message_id": topic.status_message_id, "text": text,
                         "parse_mode": "HTML"},
                    )  # fmt: skip
                except BotApiError as exc:
                    if not exc.not_modified and not exc.message_gone:
                        raise
                    if exc.not_modified:
                        await self._shown(session_id, status, text)
                        return record
                else:
                    await self._shown(session_id, status, text)
                    return record
        message = await self.topics.send(
            record, "sendMessage", {"text": text, "parse_mode": "HTML", "disable_notification": True},
            Priority.NORMAL,
        )  # fmt: skip
        status.text = text
        topic = self.store.topic(record.id)
        if topic is not None:
            await self.store.put_topic(
                attrs.evolve(topic, status_message_id=int(message["message_id"]), status_text=text)
            )
        return record

    async def _shown(self, session_id: str, status: _Status, text: str) -> None:
        """The status message says ``text`` now (kept on disk: a restart does not send it again)."""
        status.text = text
        topic = self.store.topic(session_id)
        if topic is not None and topic.status_text != text:
            await self.store.put_topic(attrs.evolve(topic, status_text=text))

    # -- questions -------------------------------------------------------------------

    async def _ask(self, session_id: str) -> None:
        """The agent waits for input: post its screen's options as buttons."""
        try:
            record = await self.get(session_id)
            screen = await self.screen(session_id)
        except (UnknownSessionError, RemoteRefusedError, RemoteUnavailableError) as exc:
            log.info("session %s: its question not shown: %s", session_id, exc)
            return
        choices = choices_on_screen(screen)
        try:
            message = await self.topics.send(
                record, "sendMessage",
                {"text": "The agent waits for your answer:", "reply_markup": keyboard(record.id, choices)},
                Priority.URGENT,
            )  # fmt: skip
        except _SENT as exc:
            log.warning("session %s: question not posted: %s", session_id, exc)
            return
        self._keyboards[session_id] = int(message["message_id"])

    def open_question(self, session_id: str) -> int | None:
        return self._keyboards.get(session_id)

    def _close_question(self, session_id: str, answer: str | None = None) -> None:
        """The question is over: its buttons go (they would type into whatever comes next)."""
        message_id = self._keyboards.pop(session_id, None)
        if message_id is None:
            return
        text = f"Answered: {answer}" if answer else "The agent no longer waits for this."

        async def edit() -> None:
            try:
                await self.lanes.call(
                    self.chat_id, "editMessageText",
                    {"chat_id": self.chat_id, "message_id": message_id, "text": text}, Priority.NORMAL,
                )  # fmt: skip
            except (BotApiError, NetworkError) as exc:
                log.info("session %s: question not closed: %s", session_id, exc)

        self.spawn(edit)

    # -- the outbox --------------------------------------------------------------------

    async def _deliver_outbox(self) -> None:
        """Deliver queued answers and ends, oldest first; each removed once Telegram took it."""
        while True:
            self._outbox_changed = trio.Event()
            for entry in await self.store.pending(self.chat_id):
                try:
                    await self._deliver(entry)
                except (NetworkError, BotApiError, RemoteUnavailableError) as exc:
                    if isinstance(exc, BotApiError) and exc.method != "createForumTopic":
                        # the message itself refused: sending it again would be refused again
                        log.warning("outbox: dropped an entry for session %s: %s", entry.session_id, exc)
                        await self.store.delivered(entry.id)
                        continue
                    # no network, or no topic (a group without topics, no right to manage
                    # them): the answers wait until that is fixed
                    log.warning("outbox: could not deliver yet (%s); retrying", exc)
                    quick = isinstance(exc, NetworkError | RemoteUnavailableError)
                    await trio.sleep(5.0 if quick else self.retry_after_failure)
                    self._outbox_changed.set()
                    break
                except TopicGoneError as exc:
                    # refused as it is: sending it again would be refused again
                    log.warning("outbox: dropped an entry for session %s: %s", entry.session_id, exc)
                await self.store.delivered(entry.id)
            await self._outbox_changed.wait()

    async def _deliver(self, entry: OutboxEntry) -> None:
        parts = split_message(entry.text, MESSAGE_LIMIT)
        record = await self._record(entry.session_id)
        if record is None:
            return  # its session was removed meanwhile
        if len(parts) > MAX_PARTS:
            summary = split_message(entry.text, 900)[0].rstrip()
            await self.topics.send(
                record, "sendDocument",
                {"caption": f"The answer is {units(entry.text)} characters long; all of it is in the file. "
                            f"It begins:\n{summary}"[:1000]},
                Priority.URGENT,
                files={"document": ("answer.txt", entry.text.encode("utf-8"), "text/plain")},
            )  # fmt: skip
            return
        for n, part in enumerate(parts):
            if part.strip():
                await self.topics.send(record, "sendMessage", {"text": part}, Priority.URGENT)
            if n + 1 < len(parts):
                # a restart from here sends the rest, not the parts already sent
                await self.store.rest(entry.id, "".join(parts[n + 1 :]))

    async def _record(self, session_id: str | None) -> SessionRecord | None:
        if session_id is None:
            return None
        try:
            return await self.get(session_id)
        except (UnknownSessionError, RemoteRefusedError):
            return None

    # -- replies -----------------------------------------------------------------------

    async def reply(self, chat_id: int, thread_id: int | None, text: str, *, html: bool = False) -> None:
        """Answer a user in a chat (and topic); failures are logged (the user may ask again)."""
        params: dict[str, Any] = {"chat_id": chat_id, "text": text}
        if thread_id is not None:
            params["message_thread_id"] = thread_id
        if html:
            params["parse_mode"] = "HTML"
        try:
            await self.lanes.call(chat_id, "sendMessage", params, Priority.URGENT)
        except (BotApiError, NetworkError) as exc:
            log.warning("chat %s: reply not sent: %s", chat_id, exc)


async def serve_telegram(
    settings: Settings,
    manager: SessionManager,
    computer: str,
    mesh: Mesh | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the Telegram front end until cancelled. Ready at once: the daemon starts without
    Telegram answering, and with a ``mesh`` the bot runs only while this computer holds the
    bot's lease (see :mod:`.lease`).

    A lost lease (another holder, Redis unreachable for too long) stops the bot here; then it
    waits for the lease again.
    """
    assert settings.telegram_token is not None
    if not settings.telegram_users:
        log.warning("telegram_users is empty: the bot shows the sessions, and nobody may act")
    task_status.started()
    if mesh is None:
        await _serve_bot(settings, manager, computer)
        return
    from .lease import LeaseLostError, PollerLease

    lease = PollerLease(
        mesh.redis, settings.telegram_token, f"{mesh.name}/{mesh.instance}", settings.heartbeat_ttl
    )
    while True:
        await lease.acquire()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lease.keep)  # raises when lost: the bot here stops with it
                await _serve_bot(settings, manager, computer, mesh)
        except* LeaseLostError as group:
            log.warning("the Telegram bot stopped here: %s; waiting for its lease again", group.exceptions[0])
        finally:
            await lease.release()


async def _serve_bot(
    settings: Settings, manager: SessionManager, computer: str, mesh: Mesh | None = None
) -> None:
    assert settings.telegram_token is not None
    async with (
        open_telegram_store(settings.state_dir / "telegram.db") as store,
        BotApi(settings.telegram_api_url, settings.telegram_token) as api,
    ):
        remote = RemoteSessions(mesh) if mesh is not None else None
        bot = TelegramBot(settings, manager, api, store, computer, remote=remote)
        await bot.run()
