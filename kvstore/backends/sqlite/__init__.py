"""SQLite backend: one table in one file, WAL, group commit, safe across processes.

Layout: a single ``kv`` table keyed by ``(ns, key)``, where ``ns`` is the store's
namespace, plus a partial index on ``expires_at`` so expired rows can be found
without scanning the table. Expiry times are absolute wall-clock seconds, which
is what lets several processes agree on them.

aiosqlite runs every statement on one worker thread per connection, so each
``await`` is a thread hop. Writes go through the group committer
(:mod:`kvstore.backends.sqlite.committer`), which commits the writes of all
concurrent tasks in one transaction on the writer connection. Reads use a
connection of their own (read-only, autocommit): each read sees only committed
rows, and never queues behind a batch that waits for another process's lock
(WAL readers do not wait for writers).

``:memory:`` is the exception: a private in-memory database exists for one
connection only (a shared-cache URI would share it, but shared cache locks
tables, so readers would wait for the writer anyway). There reads use the
writer connection and wait until no batch transaction is open, so they still
never see an uncommitted batch; no other process can hold its lock.

Expired rows are deleted in bounded batches (:data:`RECLAIM_LIMIT`) by write
transactions; when nothing writes, a read that finds a reclaim due queues an
empty write for it. That write runs on the committer's drain task, which ends
as soon as the queue is empty: no task outlives the calls.
"""

from .engine import MEMORY
from .sql import MAX_BATCH, RECLAIM_INTERVAL, RECLAIM_LIMIT
from .store import SQLiteStore

__all__ = ["MAX_BATCH", "MEMORY", "RECLAIM_INTERVAL", "RECLAIM_LIMIT", "SQLiteStore"]
