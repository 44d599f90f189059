"""The :class:`SessionManager`: lifecycle, messages and expiry of an agent's chat sessions."""

from __future__ import annotations

import builtins
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Self, cast

import anyio

from kvstore import KVStore

from ..errors import (
    InvalidSessionInputError,
    SessionError,
    SessionExpiredError,
    SessionNotFoundError,
    SessionRenewalError,
)
from ..messages import Message
from ..state import STATE_CACHE_STORE
from . import idempotency
from .config import TIMEOUT_FIELDS, SessionsConfig, TimeoutConfig
from .history import read_page
from .keys import SESSION_PREFIX, SESSIONS_STORE, agent_prefix, message_key, session_key
from .models import Exchange, ExpiredHook, MessagePage, Posted, Session, SessionsRuntime
from .record import Lifetime, SessionRecord, StoredTimeout
from .sweeper import Skip, Sweeper, decoded
from .validation import (
    check_content,
    check_cursor,
    check_id,
    check_limit,
    check_metadata,
    check_name,
)
from .writer import Draft, SessionWriter

__all__ = ["SessionManager"]

logger = logging.getLogger(__name__)

_EXPIRE_BATCH = 64
"""TTL changes sent concurrently when a session's max duration grows."""


def _state_store(runtime: SessionsRuntime) -> KVStore | None:
    """The store of the runtime's state cache, whose entries sessions remove with their messages."""
    try:
        store = getattr(getattr(runtime, "state_cache", None), "store", None)
        if store is not None:
            return cast(KVStore, store)
        return runtime.kv_service.get_store(STATE_CACHE_STORE)
    except Exception:  # a runtime without a state cache: nothing to remove
        return None


class SessionManager:
    """Chat sessions of an agent runtime, stored in its ``"sessions"`` KV store.

    Several managers (several processes) may share one backend: every
    read-modify-write goes through the store's atomic ``update``.

    Args:
        runtime: supplies ``agent_id``, ``kv_service``, ``compose_state`` and
            ``generate_reply`` (an ``AgentRuntime`` does).
        config: defaults and limits (``SessionsConfig()`` if None).
        clock: seconds since the epoch; inject a fake one in tests.
        on_expired: called once per expired session removed by :meth:`sweep`
            (sync or async), even when several replicas sweep concurrently.
            Errors it raises are logged, not propagated.

    >>> async with AgentRuntime() as runtime:                  # doctest: +SKIP
    ...     sessions = runtime.sessions
    ...     session = await sessions.create(user_id="u1")
    ...     reply = await sessions.send_message(session.id, "hello")
    ...     page = await sessions.messages(session.id, limit=20)
    """

    def __init__(
        self,
        runtime: SessionsRuntime,
        *,
        config: SessionsConfig | None = None,
        clock: Callable[[], float] = time.time,
        on_expired: ExpiredHook | None = None,
    ) -> None:
        if config is not None and not isinstance(config, SessionsConfig):
            raise InvalidSessionInputError(
                f"config must be a SessionsConfig, not {type(config).__name__}"
            )
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {type(clock).__name__}")
        if on_expired is not None and not callable(on_expired):
            raise TypeError(f"on_expired must be callable, not {type(on_expired).__name__}")
        self._runtime = runtime
        self._config = config or SessionsConfig()
        self.on_expired: ExpiredHook | None = on_expired
        """Hook called once per swept session; may be set after construction."""
        self._clock = clock
        self._store: KVStore = runtime.kv_service.get_store(SESSIONS_STORE)
        self._state_store: KVStore | None = _state_store(runtime)
        self._sweeper = Sweeper(
            self._store,
            grace_seconds=self._config.grace_seconds,
            report=self._notify,
            lookback=self._config.max_clock_skew + 2 * self._config.cleanup_interval,
            state_store=self._state_store,
        )
        self._writer = SessionWriter(
            self._store,
            check_live=self._check_live,
            clock=self._clock,
            grace_seconds=self._config.grace_seconds,
            commit_timeout=self._config.commit_timeout,
            answer_ttl=self._config.idempotency_window,
            lease_seconds=self._config.idempotency_pending_seconds,
        )

    @property
    def config(self) -> SessionsConfig:
        """Defaults and limits."""
        return self._config

    @property
    def store(self) -> KVStore:
        """The store holding the sessions."""
        return self._store

    @property
    def clock(self) -> Callable[[], float]:
        """The clock (seconds since the epoch) every timestamp comes from."""
        return self._clock

    # -- lifecycle of a session --------------------------------------------------------------

    async def create(
        self,
        *,
        agent_id: str | None = None,
        user_id: str,
        metadata: Mapping[str, Any] | None = None,
        # The name is the Sessions API's (a session timeout, not a call deadline).
        timeout: TimeoutConfig | Mapping[str, Any] | None = None,  # noqa: ASYNC109
    ) -> Session:
        """Open a session between *user_id* and *agent_id* (default: the runtime's agent).

        Raises:
            InvalidSessionInputError: bad ids, metadata or timeout values.
        """
        agent = check_name("agent_id", self._runtime.agent_id if agent_id is None else agent_id)
        user = check_name("user_id", user_id)
        meta = check_metadata(metadata, "session metadata", self._config.max_metadata_bytes)
        stored_timeout = StoredTimeout.resolved(self._config.resolve(timeout))
        now = self._clock()
        grace = self._config.grace_seconds
        while True:
            record = SessionRecord.new(
                # uuid4: 122 bits from os.urandom, the form ElizaOS's sessionId has.
                str(uuid.uuid4()),
                agent_id=agent,
                user_id=user,
                metadata=meta,
                timeout=stored_timeout,
                now=now,
            )
            # add(): a 122-bit collision is not going to happen, but if it did
            # it must not overwrite someone else's session.
            if await self._store.add(
                session_key(record.id), record.to_dict(), ttl=record.expires_at - now + grace
            ):
                break
        await self._store.set(
            agent_prefix(agent) + record.id, now, ttl=record.latest_end - now + grace
        )
        await self._sweeper.index(record.id, record.expires_at, now)
        return record.to_session(self._clock)

    async def get(self, session_id: str) -> Session:
        """The live session *session_id*.

        Raises:
            SessionNotFoundError: unknown, ended or already swept.
            SessionExpiredError: expired, not yet swept.
        """
        sid = check_id(session_id)
        record = await self._load(sid, self._clock())
        return record.to_session(self._clock)

    async def renew(self, session_id: str) -> Session:
        """Extend the session by its timeout from now, up to its max duration.

        Works whether auto-renew is on or off, and counts a renewal.

        Raises:
            SessionRenewalError: the session reached its max duration.
            SessionExpiredError: it expired (timed out) before being renewed.
            SessionNotFoundError: unknown id.
        """
        sid = check_id(session_id)
        now = self._clock()

        record = await self._modify(sid, now, lambda live: live.renewed(now), renewing=True)
        return record.to_session(self._clock)

    async def heartbeat(self, session_id: str) -> Session:
        """Record activity: updates ``last_activity`` and, with auto-renew, the expiry.

        Raises:
            SessionExpiredError: the session expired.
            SessionNotFoundError: unknown id.
        """
        sid = check_id(session_id)
        now = self._clock()

        record = await self._modify(sid, now, lambda live: live.beat(now))
        return record.to_session(self._clock)

    async def update_timeout(
        self,
        session_id: str,
        # The name is the Sessions API's (a session timeout, not a call deadline).
        timeout: TimeoutConfig | Mapping[str, Any],  # noqa: ASYNC109
    ) -> Session:
        """Change the live session's timeout settings; ``expires_at`` follows at once.

        Fields of *timeout* that are None keep the session's current values.
        ``expires_at`` is recomputed by the usual rule from the session's last
        activity (or last renewal, without auto-renew), so a shorter timeout may
        leave the session already expired; the activity, the renewal count and
        the messages are unchanged. Unlike :meth:`create`, the timeout is not
        capped by the max duration (ElizaOS keeps both as given; the expiry is
        never past ``created_at`` + max duration anyway). Atomic on every
        backend: one ``update`` of the record.

        Raises:
            InvalidSessionInputError: a value that is not a positive number of minutes.
            SessionNotFoundError: unknown id.
            SessionExpiredError: the session expired before the change.
        """
        sid = check_id(session_id)
        if isinstance(timeout, Mapping):
            timeout = TimeoutConfig.from_mapping(timeout)
        elif not isinstance(timeout, TimeoutConfig):
            raise InvalidSessionInputError(
                f"timeout must be a TimeoutConfig or a dict, not {type(timeout).__name__}"
            )
        now = self._clock()
        stored = await self._store.get(session_key(sid))
        old = self._check_live(stored, sid, now)
        current = old.timeout
        new = StoredTimeout(
            *(
                getattr(current, name) if getattr(timeout, name) is None else getattr(timeout, name)
                for name in TIMEOUT_FIELDS
            )
        )
        # The record's TTL, fixed before the update runs, from the new settings.
        ttl = max(old.with_timeout(new).expiry_bound(now) - now, 0.0) + self._config.grace_seconds
        changed: SessionRecord | None = None

        def apply(value: Any) -> dict[str, Any]:
            nonlocal changed
            live = old if value == stored else self._check_live(value, sid, now)
            changed = live.with_timeout(new)
            return changed.to_dict()

        result = await self._store.update(session_key(sid), apply, ttl=ttl)
        if changed is None:  # a store that did not call apply; cannot happen with ours
            changed = SessionRecord.from_dict(result)
        if changed.expires_at < old.expires_at:
            # The sweep finds a session in the bucket of its expiry; a later one
            # it finds on the way (renewals), an earlier one must be indexed.
            await self._sweeper.index(sid, changed.expires_at, now)
        if changed.latest_end > old.latest_end:
            await self._extend_keys(changed, now)
        return changed.to_session(self._clock)

    async def _extend_keys(self, record: SessionRecord, now: float) -> None:
        """Keep the session's index entry and messages until its new latest end."""
        ttl = record.latest_end - now + self._config.grace_seconds
        keys = [agent_prefix(record.agent_id) + record.id]
        keys += [message_key(record.id, seq) for seq in range(record.message_count)]
        for start in range(0, len(keys), _EXPIRE_BATCH):
            async with anyio.create_task_group() as group:
                for key in keys[start : start + _EXPIRE_BATCH]:
                    group.start_soon(self._store.expire, key, ttl)

    async def end(self, session_id: str) -> bool:
        """Remove the session and its messages; False if there was no such session.

        An expired session that was not swept yet is removed too (``on_expired``
        is then not called for it).
        """
        sid = check_id(session_id)

        def close(current: Any) -> dict[str, Any]:
            record = decoded(current)
            if record is None or record.state != "active":
                raise Skip(record)
            return record.with_state("ended").to_dict()

        try:
            # Marking first fences concurrent writers: no seq is allocated after
            # this, so the record's message_count covers every message key.
            stored = await self._store.update(
                session_key(sid), close, ttl=self._config.grace_seconds
            )
        except Skip:
            return False
        await self._sweeper.purge(sid, SessionRecord.from_dict(stored))
        return True

    async def list(self, *, agent_id: str | None = None) -> builtins.list[Session]:
        """Live (not expired) sessions, newest first; only *agent_id*'s if given.

        Without *agent_id* this scans every session record of the store.
        """
        now = self._clock()
        found: builtins.list[Any]
        if agent_id is None:
            found = [value async for _, value in self._store.entries(SESSION_PREFIX)]
        else:
            prefix = agent_prefix(check_name("agent_id", agent_id))
            # An agent id may contain ':', so "a:x:" also matches agent "x:y"'s
            # keys; session ids never contain ':', which tells them apart.
            ids = [
                key[len(prefix) :]
                async for key, _ in self._store.entries(prefix)
                if ":" not in key[len(prefix) :]
            ]
            values = await self._store.get_many(session_key(sid) for sid in ids)
            found = [values[key] for key in map(session_key, ids) if key in values]
        records = [record for record in map(decoded, found) if record is not None]
        sessions = [
            record.to_session(self._clock)
            for record in records
            if record.state == "active"
            and record.expires_at > now
            and (agent_id is None or record.agent_id == agent_id)
        ]
        sessions.sort(key=lambda s: s.created_at, reverse=True)
        return sessions

    # -- messages ------------------------------------------------------------------------------

    async def send_message(
        self,
        session_id: str,
        content: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Message:
        """Generate the agent's reply to the user's *content*, store both, return the reply.

        The reply comes from ``runtime.compose_state`` then
        ``runtime.generate_reply``. With auto-renew the session's expiry moves
        (never past its max duration).

        With *idempotency_key*, a retry with the same key in this session within
        ``config.idempotency_window`` returns the first reply and stores
        nothing, on any replica (:mod:`.idempotency`).

        Raises:
            SessionNotFoundError, SessionExpiredError: as :meth:`get`.
            InvalidSessionInputError: empty or non-str content, bad metadata.
            ContentTooLargeError: content or metadata above the configured limit.
            IdempotencyKeyReusedError: the key was used for another message.
            IdempotencyInFlightError: the key's first request is still in flight.
        """
        exchange = await self.exchange(
            session_id, content, metadata=metadata, idempotency_key=idempotency_key
        )
        return exchange.reply

    async def exchange(
        self,
        session_id: str,
        content: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Exchange:
        """Like :meth:`send_message`, returning both the stored user message and the reply.

        The reply is made first, then both messages are stored together: if
        making the reply or storing fails, nothing is stored (the state
        composed for the message is dropped too) and the error propagates.
        """
        sid = check_id(session_id)
        text, meta, key = self._message_input(content, metadata, idempotency_key)
        # Fail fast, before a reply is made for a session that is gone.
        record = await self._load(sid, self._clock())
        exchange, _ = await self._exchange(sid, record.lifetime, text, meta, key)
        return exchange

    async def post(
        self,
        session: Session,
        content: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        reply: bool = True,
    ) -> Posted:
        """Store a message to *session*, a snapshot just read with :meth:`get`, for a transport.

        With *reply* (the default) as :meth:`exchange`; without, as
        :meth:`open_exchange` (the reply follows with :meth:`close_exchange`).
        What a transport answers with comes back in one :class:`Posted`: the
        stored messages and the session right after storing them, read from
        the store's own answer. Neither the snapshot's session nor the new one
        is read again, which saves two store round trips per message (the
        snapshot is trusted to be live; storing still checks it atomically).

        Raises:
            InvalidSessionInputError: *idempotency_key* without *reply*, or
                what :meth:`exchange` raises.
            SessionNotFoundError, SessionExpiredError, ExchangeNotStoredError,
            IdempotencyKeyReusedError, IdempotencyInFlightError: as :meth:`exchange`.
        """
        if not isinstance(session, Session):
            raise TypeError(f"post() takes a Session from get(), not {type(session).__name__}")
        text, meta, key = self._message_input(content, metadata, idempotency_key)
        lifetime = Lifetime.of(session)
        answer: Message | None = None
        if reply:
            (user, answer), record = await self._exchange(session.id, lifetime, text, meta, key)
        elif key is not None:
            raise InvalidSessionInputError(
                "an idempotency key needs reply=True: the first answer of a retried"
                " message must hold its reply"
            )
        else:
            user, record = await self._open(session.id, text, meta, lifetime)
        after = await self._session_after(session, record)
        return Posted(user, answer, after, after.renewal_count > session.renewal_count)

    async def _session_after(self, before: Session, record: SessionRecord | None) -> Session:
        """The session once a message was stored: from *record*, the commit's, if there is one."""
        if record is None:
            try:
                return await self.get(before.id)
            except SessionError:
                return before
        if record.state != "active":
            # Ended or expired in the instant after this exchange: the messages
            # are stored; report the session as it was.
            return before
        return record.to_session(self._clock)

    def _message_input(
        self, content: str, metadata: Mapping[str, Any] | None, idempotency_key: str | None
    ) -> tuple[str, dict[str, Any], str | None]:
        """The checked content, metadata and idempotency key of a message to send."""
        text = check_content(content, self._config.max_content_bytes)
        meta = check_metadata(metadata, "message metadata", self._config.max_metadata_bytes)
        key = None if idempotency_key is None else idempotency.check_key(idempotency_key)
        return text, meta, key

    async def _exchange(
        self, sid: str, lifetime: Lifetime, text: str, meta: dict[str, Any], key: str | None
    ) -> tuple[Exchange, SessionRecord | None]:
        """Make the reply and store the exchange; also the record as committed (if known)."""
        if key is None:
            return await self._reply_and_store(sid, lifetime, text, meta, None)
        now = self._clock()
        print_ = idempotency.fingerprint(text, meta)
        lease = idempotency.Lease(idempotency.marker_key(sid, key), print_)
        lease_for = self._config.idempotency_pending_seconds
        mine = idempotency.pending(lease, now)
        while not await self._store.add(lease.marker, mine, ttl=lease_for):
            found = await self._store.get(lease.marker)
            if not idempotency.is_free(found):
                return idempotency.replay(found, print_, key), None
            try:  # its request failed, or it lapsed meanwhile: take it over
                await self._store.update(
                    lease.marker, idempotency.take_over(lease, now), ttl=lease_for
                )
                break
            except idempotency.ClaimLostError:
                continue  # another request took it first

        async def keep_lease() -> None:
            # So that a retry sees this request in flight however long the reply
            # takes; once lost (this process stalled), the claim fails anyway.
            while True:
                await anyio.sleep(lease_for / 3)
                try:
                    await self._store.update(lease.marker, self._extended(lease), ttl=lease_for)
                except idempotency.ClaimLostError:
                    return
                except Exception:
                    logger.warning("could not extend idempotency marker %r", lease.marker)

        outcome: tuple[Exchange, SessionRecord | None] | BaseException | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(keep_lease)
            try:
                outcome = await self._reply_and_store(sid, lifetime, text, meta, lease)
            except BaseException as err:
                # Raised below, outside the task group, as itself (not in an ExceptionGroup).
                outcome = err
            finally:
                group.cancel_scope.cancel()
        if isinstance(outcome, tuple):
            return outcome
        if isinstance(outcome, idempotency.ClaimLostError):
            # Another request holds the key now: its exchange is the one stored.
            return idempotency.after_loss(outcome.found, print_, key), None
        with anyio.CancelScope(shield=True):
            await self._release(lease)
        if outcome is None:  # cancelled from outside: the scope swallowed nothing of ours
            raise anyio.get_cancelled_exc_class()()
        raise outcome

    @staticmethod
    def _extended(lease: idempotency.Lease) -> Callable[[Any], Any]:
        def apply(current: Any) -> Any:
            if not idempotency.owned_by(current, lease.owner):
                raise idempotency.ClaimLostError(current)
            return current

        return apply

    async def _reply_and_store(
        self,
        sid: str,
        lifetime: Lifetime,
        text: str,
        meta: dict[str, Any],
        lease: idempotency.Lease | None,
    ) -> tuple[Exchange, SessionRecord | None]:
        user = Draft("user", text, meta)
        # The providers see the message as it will be stored, except for its
        # timestamp, which the store allocates only once the reply is there.
        draft = Message(user.id, sid, "user", text, self._clock(), meta)
        try:
            state = await self._runtime.compose_state(draft)
            reply_text = await self._runtime.generate_reply(draft, state)
            if not isinstance(reply_text, str):
                raise TypeError(f"generate_reply returned a {type(reply_text).__name__}, not a str")
            reply = Draft("agent", reply_text, {"in_reply_to": user.id})
            stored, record = await self._writer.append(
                sid, [user, reply], renewals=1, lease=lease, known=lifetime
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._forget_state(user.id)
            raise
        return Exchange(*stored), record

    async def open_exchange(
        self, session_id: str, content: str, *, metadata: Mapping[str, Any] | None = None
    ) -> Message:
        """Store the user's message now; the reply follows with :meth:`close_exchange`.

        For transports that answer before the reply is made (SSE, WebSocket):
        the caller makes the reply (``runtime.compose_state`` and
        ``generate_reply``, streamed as it likes) and then stores it, or the
        error that stopped it, with :meth:`close_exchange`, so that every user
        message has an answer in history and counts agree with history.
        """
        sid = check_id(session_id)
        text, meta, _ = self._message_input(content, metadata, None)
        user, _ = await self._open(sid, text, meta, None)
        return user

    async def _open(
        self, sid: str, text: str, meta: dict[str, Any], known: Lifetime | None
    ) -> tuple[Message, SessionRecord | None]:
        """Store the user's message alone; also the record as committed (if known)."""
        (user,), record = await self._writer.append(
            sid, [Draft("user", text, meta)], renewals=1, known=known
        )
        return user, record

    async def close_exchange(
        self,
        user: Message,
        reply: str | None = None,
        *,
        error: str | None = None,
        reply_id: str | None = None,
        session: Session | None = None,
    ) -> Message:
        """Store the agent's *reply* to *user* (from :meth:`open_exchange`), or an error marker.

        Exactly one of *reply* and *error* is given. An error marker is an
        agent message whose content is *error* and whose metadata has
        ``"error": True``, so history shows the exchange failed. *reply_id*
        is the stored message's id (default: a new UUID), for a transport that
        named the reply while streaming it. *session*: the session as the
        transport last read it (from :meth:`post`), which saves reading it again.
        """
        if (reply is None) == (error is None):
            raise InvalidSessionInputError("close_exchange takes exactly one of reply and error")
        meta: dict[str, Any] = {"in_reply_to": user.id}
        if error is not None:
            meta["error"] = True
        text = reply if reply is not None else error
        assert text is not None
        draft = (
            Draft("agent", text, meta) if reply_id is None else Draft("agent", text, meta, reply_id)
        )
        known = None if session is None else Lifetime.of(session)
        (stored,), _ = await self._writer.append(user.session_id, [draft], renewals=0, known=known)
        return stored

    async def _release(self, lease: idempotency.Lease) -> None:
        """Free *lease*'s marker for a retry, if it is still this request's pending one."""
        try:
            await self._store.update(
                lease.marker,
                idempotency.revoke(lease.owner),
                ttl=self._config.idempotency_pending_seconds,
            )
        except idempotency.ClaimLostError:
            pass  # answered (the claim was made), or another request's now
        except Exception:
            # It expires after idempotency_pending_seconds anyway.
            logger.warning("could not release idempotency marker %r", lease.marker)

    async def _forget_state(self, message_id: str) -> None:
        if self._state_store is None:
            return
        try:
            await self._state_store.delete(message_id)
        except Exception:
            logger.warning("could not drop the cached state of message %r", message_id)

    async def messages(
        self,
        session_id: str,
        *,
        limit: int = 50,
        before: float | None = None,
        after: float | None = None,
    ) -> builtins.list[Message]:
        """Up to *limit* messages, newest first, with ``after < created_at < before``.

        To page back, pass the oldest ``created_at`` of a page as the next
        *before*: timestamps are strictly increasing, so pages never overlap.

        Raises:
            InvalidSessionInputError: *limit* not in ``1..max_page_size``, or a
                cursor that is not a finite number.
            SessionNotFoundError, SessionExpiredError: as :meth:`get`.
        """
        page = await self.history(session_id, limit=limit, before=before, after=after)
        return page.messages

    async def history(
        self,
        session_id: str,
        *,
        limit: int = 50,
        before: float | None = None,
        after: float | None = None,
    ) -> MessagePage:
        """Like :meth:`messages`, also telling whether older matching messages exist."""
        sid = check_id(session_id)
        limit = check_limit(limit, self._config.max_page_size)
        before = check_cursor("before", before)
        after = check_cursor("after", after)
        record = await self._load(sid, self._clock())
        if record.stale(self._clock(), self._config.commit_timeout):
            # A writer died mid-append: without this, readers would wait for
            # the next writer to see past its seqs.
            await self._writer.give_up_stale(record)
            record = await self._load(sid, self._clock())
        return await read_page(self._store, record, limit=limit, before=before, after=after)

    # -- expiry --------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Remove the sessions that expired, with their messages and index entries.

        Calls ``on_expired`` once for each session this call removed; with
        several replicas sweeping one backend, each expired session is claimed
        (and reported) by exactly one of them. Returns the number it removed.
        """
        return await self._sweeper.sweep(self._clock())

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Self]:
        """Sweep every ``cleanup_interval`` seconds in the background while inside.

        The sweeper is a task of an anyio task group owned by this context: it
        is cancelled on exit and nothing is left running. A failing sweep is
        logged and retried at the next interval.

        >>> async with runtime.sessions.running():    # doctest: +SKIP
        ...     await serve_forever()
        """
        error: BaseException | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(self._sweep_forever, name="session sweeper")
            try:
                yield self
            except BaseException as exc:
                # Raised again below, outside the task group, so the caller sees
                # their own exception rather than an ExceptionGroup around it
                # (the sweeper task itself never fails).
                error = exc
            finally:
                group.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _sweep_forever(self) -> None:
        interval = self._config.cleanup_interval
        while True:
            await anyio.sleep(interval)
            try:
                removed = await self.sweep()
            except Exception:
                logger.exception("session sweep failed; retrying in %ss", interval)
            else:
                if removed:
                    logger.info("session sweep removed %d expired session(s)", removed)

    async def _notify(self, record: SessionRecord) -> None:
        hook = self.on_expired
        if hook is None:
            return
        session = record.to_session(self._clock)
        try:
            result = hook(session)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("on_expired hook failed for session %r", session.id)

    # -- internals -------------------------------------------------------------------------

    async def _modify(
        self,
        sid: str,
        now: float,
        change: Callable[[SessionRecord], SessionRecord],
        *,
        renewing: bool = False,
    ) -> SessionRecord:
        """Atomically apply *change* to the live record of *sid*; return the new record.

        Raises what :meth:`_check_live` raises, before or during the update.
        """
        # The record's TTL is needed before the update runs: read it first, and
        # use an upper bound of the new expiry that does not depend on fields a
        # concurrent writer could change.
        stored = await self._store.get(session_key(sid))
        record = self._check_live(stored, sid, now, renewing=renewing)
        ttl = max(record.expiry_bound(now) - now, 0.0) + self._config.grace_seconds
        changed: SessionRecord | None = None

        def apply(current: Any) -> dict[str, Any]:
            nonlocal changed
            # Unchanged since the read above (the usual case): already decoded and checked.
            live = record
            if current != stored:
                live = self._check_live(current, sid, now, renewing=renewing)
            changed = change(live)
            return changed.to_dict()

        result = await self._store.update(session_key(sid), apply, ttl=ttl)
        # update() stores and returns what its function returned last: `changed`,
        # so decoding the result again is only for a store that did not call it.
        return changed if changed is not None else SessionRecord.from_dict(result)

    async def _load(self, sid: str, now: float) -> SessionRecord:
        return self._check_live(await self._store.get(session_key(sid)), sid, now)

    @staticmethod
    def _check_live(current: Any, sid: str, now: float, *, renewing: bool = False) -> SessionRecord:
        """*current* as a record if it is a live session, else raise."""
        record = decoded(current)
        if record is None or record.state == "ended":
            raise SessionNotFoundError(sid)
        if renewing and now >= record.latest_end:
            raise SessionRenewalError.at_max_duration(
                sid, record.expires_at, record.timeout.max_duration_minutes, record.latest_end
            )
        if record.state != "active" or now >= record.expires_at:
            raise SessionExpiredError(sid, record.expires_at)
        return record

    def __repr__(self) -> str:
        return f"<{type(self).__name__} agent={self._runtime.agent_id!r} config={self._config!r}>"
