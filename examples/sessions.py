"""Chat sessions: create, chat, page through history, renew, get warned, expire.

Runs on the in-memory default in about two seconds: the timeouts here are
fractions of a minute so that expiry can be watched. Set KV_STORE_BACKEND=sqlite
or KV_STORE_BACKEND=redis (with REDIS_URL) to keep the sessions there instead.
"""

from __future__ import annotations

import anyio

from runtime import AgentRuntime
from runtime.sessions import Session, SessionNotFoundError, SessionsConfig, TimeoutConfig

CONFIG = SessionsConfig(
    default_timeout_minutes=0.02,  # 1.2 s of inactivity ends a session
    warning_threshold_minutes=0.01,  # warn when 0.6 s remain
    max_duration_minutes=1,  # no session lives longer, renewed or not
    cleanup_interval=0.2,  # the background sweeper runs five times a second
)


async def main() -> None:
    async with AgentRuntime(agent_id="example-agent", sessions_config=CONFIG) as runtime:
        sessions = runtime.sessions
        expired = anyio.Event()

        def on_expired(session: Session) -> None:
            print(f"on_expired -> {session.id[:8]}… after {session.message_count} messages")
            expired.set()

        sessions.on_expired = on_expired

        session = await sessions.create(user_id="ada", metadata={"channel": "example"})
        print(f"created    -> {session.id[:8]}… expires in {session.time_remaining:.1f}s")

        for text in ("hello", "what can you do?", "thanks"):
            reply = await sessions.send_message(session.id, text)
            print(f"sent       -> {text!r:20} reply {reply.content!r}")

        newest = await sessions.messages(session.id, limit=2)
        print("page 1     ->", [m.content for m in newest])
        older = await sessions.messages(session.id, limit=2, before=newest[-1].created_at)
        print("page 2     ->", [m.content for m in older])

        renewed = await sessions.renew(session.id)
        left = renewed.time_remaining
        print(f"renewed    -> renewal_count={renewed.renewal_count}, {left:.2f}s left")

        await anyio.sleep(0.7)
        current = await sessions.get(session.id)
        print(
            f"later      -> {current.time_remaining:.2f}s left,"
            f" near expiration: {current.is_near_expiration}"
        )

        fixed = await sessions.create(
            user_id="grace", timeout=TimeoutConfig(timeout_minutes=0.5, auto_renew=False)
        )
        print(
            f"no renew   -> {fixed.id[:8]}… expires in {fixed.time_remaining:.0f}s whatever happens"
        )

        async with sessions.running():  # the sweeper removes what expires meanwhile
            with anyio.fail_after(5):
                await expired.wait()

        try:
            await sessions.get(session.id)
        except SessionNotFoundError as err:
            print("after sweep->", err)
        print("still open ->", [s.user_id for s in await sessions.list()])


if __name__ == "__main__":
    anyio.run(main)
