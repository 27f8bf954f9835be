"""A LangGraph checkpointer on plain Redis >= 6.2, Valkey or a Redis Cluster: no modules, no Lua,
no pickle.

It exists because ``langgraph-checkpoint-redis`` needs the RedisJSON and RediSearch modules, and the
plain-Redis savers on PyPI either report an outage as an empty thread, pay more round trips per
superstep, or bring their own client instead of redis-py.

Key layout, shown for thread ``t1`` in the default namespace; ``<ns>`` is the checkpoint namespace
(``""`` for the root graph, ``child:1f0c...`` for a subgraph) and always ends the key, so any
namespace string gives a distinct key (checkpoint ids, LangGraph's uuid6 strings, hold no ``:`` or
NUL). Every key of a thread carries the ``{t1}`` hash tag, so one thread lives on one Redis Cluster
slot: each write can be a single MULTI, and each read pipeline goes to the one node that holds the
thread::

    nn:cp:{t1}:keys                  SET   every other key of the thread (what delete_thread drops)
    nn:cp:{t1}:ckpt:                 ZSET  the checkpoints of namespace "", all with score 0;
                                           member = b"<checkpoint id>\\0" + record (checkpoint
                                           without channel values, metadata, parent id)
    nn:cp:{t1}:blob:                 HASH  "<channel>:<version>" -> channel value at that version
    nn:cp:{t1}:writes:1f0c...-7a3e:  HASH  "<task id>:<idx>" -> pending write (channel, task path,
                                           value) of checkpoint 1f0c...-7a3e in namespace ""

Checkpoint ids are uuid6 strings whose lexical order is their creation order (``InMemorySaver``
relies on the same with ``max()``), so the sorted set, ordered lexically because every score is 0,
is the checkpoint table: the newest checkpoint *with its record* is one ``ZREVRANGEBYLEX ... LIMIT
0 1``, one checkpoint is the lex range ``[<id>\\0, (<id>\\x01)``, and ``before=`` is an exclusive
upper bound. Channel values are stored once per channel version, as ``InMemorySaver`` does, so a
superstep rewrites only the channels it changed; a version string never contains ``:`` (ours are
``"<n>.<random>"``), which keeps ``<channel>:<version>`` unambiguous even for channels such as
``branch:to:node``.

Round trips (one pipeline each): ``put`` 1 (MULTI), ``put_writes`` 1 (MULTI), ``get_tuple`` 2
(the checkpoint, then its channel values and pending writes), ``list`` 2 per page of 100 plus 1 to
find the namespaces when the config names none, ``delete_thread`` 2. Nothing here swallows a Redis
error: an unreachable server raises, it never looks like an empty thread.

On a Redis Cluster every command and MULTI touches one thread, so one slot; the only thing that
spans threads, finding them all (``list`` without a config), is a SCAN that the cluster client runs
on every primary.

With ``ttl`` every key a write touches gets that expiry again, so a thread idle for ``ttl``
seconds disappears whole; in a thread that keeps running, the pending writes of checkpoints older
than ``ttl`` can expire first (time travel to such a checkpoint re-runs its tasks).
"""

from __future__ import annotations

import asyncio
import builtins
import random
import re
import threading
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from nervenet.cluster import RedisUrl, is_cluster, is_cluster_sync
from nervenet.keys import Keys

__all__ = ["RedisSaver"]

T = TypeVar("T")
Command = tuple[Any, ...]
SyncClient = redis.Redis | redis.cluster.RedisCluster
AsyncClient = aioredis.Redis | aiocluster.RedisCluster

#: Ends the checkpoint id inside a sorted-set member. NUL sorts below every other byte, so
#: members order exactly as their ids do, whatever the record after it.
_SEP = b"\0"
#: Checkpoints fetched per round trip by ``list``.
_PAGE = 100
#: Type tag of a channel emptied at this version; ``InMemorySaver`` stores the same marker.
_EMPTY = b"empty"
#: Keys asked for per SCAN call when looking for every thread.
_SCAN_COUNT = 1000
#: Concurrent round trips of one saver's async cluster client. That client opens at most 100
#: connections per node (redis-py's default) and raises beyond them instead of waiting, as the
#: blocking pool of the single-server client does; this keeps a burst of runs below the limit.
_CLUSTER_CONCURRENCY = 100


@dataclass(frozen=True, slots=True)
class _Query:
    """Commands sent to Redis in one round trip."""

    commands: list[Command]
    atomic: bool = False
    """Wrap them in MULTI/EXEC (writes), or send them as a plain pipeline (reads)."""


@dataclass(frozen=True, slots=True)
class _Scan:
    """Every key matching ``pattern`` of ``type``, sent back as a list: one SCAN cursor walk, on
    every primary when the client is a cluster client (its ``scan_iter`` does that)."""

    pattern: str
    type: str


#: What every operation is written as, once for sync and async callers alike: a generator that
#: yields a ``_Query`` (or a ``_Scan``) and is sent back its replies, and yields results for the
#: caller. The two drivers, ``RedisSaver._run`` and ``RedisSaver._arun``, are the only code that
#: does I/O.
_Plan = Generator[_Query | _Scan | T, Any, None]


@dataclass(frozen=True, slots=True)
class _Saved:
    """A checkpoint record as stored; the checkpoint is decoded only if it is returned."""

    checkpoint_id: str
    parent_id: str
    """Empty for the first checkpoint of a namespace."""
    metadata: CheckpointMetadata
    checkpoint: bytes
    """Typed frame of the checkpoint without its channel values."""


@dataclass(frozen=True, slots=True)
class _ThreadKeys:
    """The keys of one thread, below ``Keys.checkpoint_prefix`` (layout in the module docstring)."""

    prefix: str

    @property
    def registry(self) -> str:
        return f"{self.prefix}:keys"

    def checkpoints(self, ns: str) -> str:
        return f"{self.prefix}:ckpt:{ns}"

    def blobs(self, ns: str) -> str:
        return f"{self.prefix}:blob:{ns}"

    def writes(self, ns: str, checkpoint_id: str) -> str:
        return f"{self.prefix}:writes:{checkpoint_id}:{ns}"

    def namespace_of(self, key: str) -> str | None:
        """The namespace whose checkpoint table ``key`` is, or None for any other key."""
        head = self.checkpoints("")
        return key[len(head) :] if key.startswith(head) else None


class _Clients:
    """A saver's two Redis clients, opened on first use when it was built from a URL.

    The first use also asks the server whether it is a cluster node (one short connection, once
    per saver), so ``from_url`` stays free of I/O and a single server gets the same client as
    before. One instance is shared by every copy of a saver (LangGraph's ``with_allowlist`` may
    copy it per compiled graph), so closing the saver also closes what its copies opened.
    """

    def __init__(
        self, url: RedisUrl | None, sync: SyncClient | None, async_: AsyncClient | None
    ) -> None:
        self.url = url
        """Set when these clients are ours to open and close; None for clients handed in."""
        self._sync = sync
        self._async = async_
        self.async_gate: asyncio.Semaphore | None = None
        """Bounds the round trips in flight on an async cluster client this opened."""
        self._cluster: bool | None = None
        """What the server said it is; None until asked."""
        self._lock = threading.Lock()

    def sync(self) -> SyncClient:
        with self._lock:
            if self._sync is None:
                url = self._url_for("sync")
                if self._cluster is None:
                    self._cluster = is_cluster_sync(url)
                if self._cluster:
                    self._sync = redis.cluster.RedisCluster.from_url(url.url)
                else:
                    # Blocking pools: a burst of concurrent runs waits for a connection instead
                    # of failing with "Too many connections".
                    pool = redis.BlockingConnectionPool.from_url(url.url, timeout=None)
                    self._sync = redis.Redis(connection_pool=pool)
            return self._sync

    async def async_(self) -> AsyncClient:
        if self._async is not None:
            return self._async
        url = self._url_for("async")
        cluster = self._cluster
        if cluster is None:
            # Asked outside the lock, which must not be held across an await; two first uses
            # at once both ask, and agree.
            cluster = await is_cluster(url)
        with self._lock:
            self._cluster = cluster
            if self._async is None:
                if cluster:
                    self._async = aiocluster.RedisCluster.from_url(url.url)
                    self.async_gate = asyncio.Semaphore(_CLUSTER_CONCURRENCY)
                else:
                    apool = aioredis.BlockingConnectionPool.from_url(url.url, timeout=None)
                    self._async = aioredis.Redis(connection_pool=apool)
            return self._async

    def _url_for(self, kind: str) -> RedisUrl:
        if self.url is None:
            raise RuntimeError(
                f"this RedisSaver was given no {kind} client; pass {kind}_client= too, or build "
                "it with RedisSaver.from_url(url)"
            )
        return self.url

    def close(self) -> None:
        if self.url is not None and self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        if self.url is not None and self._async is not None:
            await self._async.aclose()
            self._async = None
            self.async_gate = None
        self.close()


class RedisSaver(BaseCheckpointSaver[str]):
    """Checkpoints on plain Redis, sync and async.

    Build it with :meth:`from_url`, or hand it ready clients, plain or cluster (both must keep
    ``decode_responses=False``; an embedded pool passes ``fakeredis.FakeRedis`` and
    ``fakeredis.FakeAsyncRedis`` on one ``FakeServer``). A saver given only one client serves only
    that side. :meth:`close` / :meth:`aclose` close the clients ``from_url`` opened; clients
    handed in belong to the caller.
    """

    def __init__(
        self,
        *,
        sync_client: SyncClient | None = None,
        async_client: AsyncClient | None = None,
        keys: Keys | None = None,
        serde: SerializerProtocol | None = None,
        ttl: float | None = None,
    ) -> None:
        super().__init__(serde=serde)
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")
        for client in (sync_client, async_client):
            if client is not None and client.get_connection_kwargs().get("decode_responses"):
                raise ValueError(
                    "RedisSaver stores binary values; build its clients with decode_responses=False"
                )
        self.keys = keys or Keys()
        self.ttl = ttl
        self._clients = _Clients(None, sync_client, async_client)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = "nn",
        serde: SerializerProtocol | None = None,
        ttl: float | None = None,
    ) -> RedisSaver:
        """A saver on a ``redis://``, ``rediss://`` or ``unix://`` URL.

        ``redis://host:port/0`` may name a single server or any node of a Redis Cluster (the
        first use asks which, and opens a cluster client for a cluster); ``redis+cluster://``
        (``rediss+cluster://``) requires a cluster and fails on a single server. Its clients open
        on first use, so one saver serves sync and async callers.
        """
        # Parsed here, without I/O, so a bad scheme fails now rather than on the first checkpoint.
        parsed = RedisUrl.parse(url)
        saver = cls(keys=Keys(namespace), serde=serde, ttl=ttl)
        saver._clients = _Clients(parsed, None, None)
        return saver

    def close(self) -> None:
        """Close the sync client :meth:`from_url` opened (:meth:`aclose` closes both)."""
        self._clients.close()

    async def aclose(self) -> None:
        """Close the clients :meth:`from_url` opened."""
        await self._clients.aclose()

    def __enter__(self) -> RedisSaver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> RedisSaver:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- drivers: the only I/O ------------------------------------------------------------------
    def _run(self, plan: _Plan[T]) -> Iterator[T]:
        client = self._clients.sync()
        reply: Any = None
        try:
            while True:
                try:
                    step = plan.send(reply)
                except StopIteration:
                    return
                if isinstance(step, _Query):
                    pipe = client.pipeline(transaction=step.atomic)
                    for command in step.commands:
                        pipe.execute_command(*command)
                    reply = pipe.execute()
                elif isinstance(step, _Scan):
                    reply = list(
                        client.scan_iter(match=step.pattern, count=_SCAN_COUNT, _type=step.type)
                    )
                else:
                    reply = None
                    yield step
        finally:
            plan.close()

    async def _arun(self, plan: _Plan[T]) -> AsyncIterator[T]:
        client = await self._clients.async_()
        gate = self._clients.async_gate
        reply: Any = None
        try:
            while True:
                try:
                    step = plan.send(reply)
                except StopIteration:
                    return
                if isinstance(step, _Query):
                    # On a cluster, redis-py 8.2's async MULTI pipeline resolves each queued
                    # command's slot on a private thread, blocking this loop ~0.2 ms a command
                    # (a put costs ~1.3 ms, sync ~0.2 ms); plain pipelines have no such cost.
                    pipe = client.pipeline(transaction=step.atomic)
                    for command in step.commands:
                        pipe.execute_command(*command)
                    if gate is None:
                        reply = await pipe.execute()
                    else:
                        async with gate:
                            reply = await pipe.execute()
                elif isinstance(step, _Scan):
                    reply = await _ascan(client, step, gate)
                else:
                    reply = None
                    yield step
        finally:
            plan.close()

    def _first(self, plan: _Plan[T]) -> T | None:
        results = list(self._run(plan))
        return results[0] if results else None

    async def _afirst(self, plan: _Plan[T]) -> T | None:
        results = [item async for item in self._arun(plan)]
        return results[0] if results else None

    # --- the BaseCheckpointSaver contract -------------------------------------------------------
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._first(self._get_plan(config))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._afirst(self._get_plan(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        yield from self._run(self._list_plan(config, filter, before, limit))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        async for item in self._arun(self._list_plan(config, filter, before, limit)):
            yield item

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        self._first(self._put_plan(config, checkpoint, metadata, new_versions))
        return _saved_config(config, checkpoint["id"])

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        await self._afirst(self._put_plan(config, checkpoint, metadata, new_versions))
        return _saved_config(config, checkpoint["id"])

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._first(self._put_writes_plan(config, writes, task_id, task_path))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._afirst(self._put_writes_plan(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._first(self._delete_plan(thread_id))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._afirst(self._delete_plan(thread_id))

    def get_next_version(self, current: str | None, channel: None) -> str:
        """``"<n>.<random>"`` like ``InMemorySaver``: the integer part orders versions, the random
        part keeps two writers that raced to the same ``n`` from naming the same blob."""
        if current is None:
            n = 0
        elif isinstance(current, int):
            n = current
        else:
            n = int(current.split(".")[0])
        return f"{n + 1:032}.{random.random():016}"

    # --- plans ----------------------------------------------------------------------------------
    def _put_plan(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> _Plan[None]:
        conf = config["configurable"]
        ns: str = conf.get("checkpoint_ns", "")
        keys = self._thread(conf["thread_id"])
        table, blobs = keys.checkpoints(ns), keys.blobs(ns)
        values = checkpoint["channel_values"]
        stored = {k: v for k, v in checkpoint.items() if k != "channel_values"}
        record = _frame(
            self._dump(stored),
            self._dump(get_checkpoint_metadata(config, metadata)),
            (conf.get("checkpoint_id") or "").encode(),
        )
        low, high = _member_range(checkpoint["id"])
        commands: list[Command] = [
            # Putting an id again replaces its record, as in InMemorySaver.
            ("ZREMRANGEBYLEX", table, low, high),
            ("ZADD", table, 0, checkpoint["id"].encode() + _SEP + record),
            ("SADD", keys.registry, table, blobs),
        ]
        if new_versions:
            fields: list[bytes | str] = []
            for channel, version in new_versions.items():
                value = self._dump(values[channel]) if channel in values else _frame(_EMPTY, b"")
                fields += [_blob_field(channel, version), value]
            commands.append(("HSET", blobs, *fields))
        commands += self._expire(keys.registry, table, blobs)
        yield _Query(commands, atomic=True)

    def _put_writes_plan(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> _Plan[None]:
        conf = config["configurable"]
        keys = self._thread(conf["thread_id"])
        key = keys.writes(conf.get("checkpoint_ns", ""), conf["checkpoint_id"])
        commands: list[Command] = []
        for idx, (channel, value) in enumerate(writes):
            slot = WRITES_IDX_MAP.get(channel, idx)
            payload = _frame(channel.encode(), task_path.encode(), self._dump(value))
            # A retried task writes the same (task, idx) again: keep the first, except the
            # special channels (error, interrupt, resume...), whose latest value is the truth.
            verb = "HSET" if slot < 0 else "HSETNX"
            commands.append((verb, key, f"{task_id}:{slot}", payload))
        if not commands:
            return
        commands.append(("SADD", keys.registry, key))
        commands += self._expire(keys.registry, key)
        yield _Query(commands, atomic=True)

    def _delete_plan(self, thread_id: str) -> _Plan[None]:
        keys = self._thread(thread_id)
        (members,) = yield _Query([("SMEMBERS", keys.registry)])
        yield _Query([("UNLINK", keys.registry, *members)])

    def _get_plan(self, config: RunnableConfig) -> _Plan[CheckpointTuple]:
        conf = config["configurable"]
        thread_id, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        table = self._thread(thread_id).checkpoints(ns)
        if checkpoint_id := get_checkpoint_id(config):
            (members,) = yield _Query([("ZRANGEBYLEX", table, *_member_range(checkpoint_id))])
        else:
            (members,) = yield _Query([("ZREVRANGEBYLEX", table, "+", "-", "LIMIT", 0, 1)])
        if members:
            yield from self._load_plan(thread_id, ns, [self._decode(members[0])])

    def _list_plan(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> _Plan[CheckpointTuple]:
        if config is None:
            thread_ids: Sequence[Any] = yield from self._thread_ids_plan()
            ns_wanted, checkpoint_id = None, None
        else:
            thread_ids = [config["configurable"]["thread_id"]]
            ns_wanted = config["configurable"].get("checkpoint_ns")
            checkpoint_id = get_checkpoint_id(config)
        low, high = _member_range(checkpoint_id) if checkpoint_id else (b"-", b"+")
        if before_id := before and get_checkpoint_id(before):
            below = b"(" + before_id.encode()
            # Both are exclusive bounds, so the tighter one is the smaller byte string.
            high = below if high == b"+" else min(high, below)
        remaining = limit
        for thread_id in thread_ids:
            keys = self._thread(thread_id)
            if ns_wanted is None:
                (members,) = yield _Query([("SMEMBERS", keys.registry)])
                found = (keys.namespace_of(m.decode()) for m in members)
                namespaces = sorted(ns for ns in found if ns is not None)
            else:
                namespaces = [ns_wanted]
            for ns in namespaces:
                if remaining is not None and remaining <= 0:
                    return
                count = yield from self._list_namespace_plan(
                    thread_id, ns, low, high, filter, remaining
                )
                if remaining is not None:
                    remaining -= count

    def _list_namespace_plan(
        self,
        thread_id: Any,
        ns: str,
        low: bytes,
        high: bytes,
        filter: dict[str, Any] | None,
        limit: int | None,
    ) -> Generator[_Query | CheckpointTuple, Any, int]:
        """Newest first, a page per round trip; returns how many it yielded."""
        table = self._thread(thread_id).checkpoints(ns)
        count = 0
        while limit is None or count < limit:
            (members,) = yield _Query([("ZREVRANGEBYLEX", table, high, low, "LIMIT", 0, _PAGE)])
            page = [self._decode(m) for m in members]
            matching = [s for s in page if _matches(s.metadata, filter)]
            if limit is not None:
                matching = matching[: limit - count]
            if matching:
                yield from self._load_plan(thread_id, ns, matching)
                count += len(matching)
            if len(members) < _PAGE:
                break
            high = b"(" + page[-1].checkpoint_id.encode()
        return count

    def _load_plan(
        self, thread_id: Any, ns: str, saved: Sequence[_Saved]
    ) -> Generator[_Query | CheckpointTuple, Any, None]:
        """Channel values and pending writes of ``saved`` in one round trip, then the tuples."""
        keys = self._thread(thread_id)
        checkpoints: list[Checkpoint] = [self._load(s.checkpoint) for s in saved]
        commands: list[Command] = []
        for s, checkpoint in zip(saved, checkpoints, strict=True):
            commands.append(("HGETALL", keys.writes(ns, s.checkpoint_id)))
            if versions := checkpoint["channel_versions"]:
                fields = [_blob_field(channel, version) for channel, version in versions.items()]
                commands.append(("HMGET", keys.blobs(ns), *fields))
        replies = iter((yield _Query(commands)))
        for s, checkpoint in zip(saved, checkpoints, strict=True):
            writes = next(replies)
            blobs = next(replies) if checkpoint["channel_versions"] else []
            values = {
                channel: self._load(blob)
                for channel, blob in zip(checkpoint["channel_versions"], blobs, strict=True)
                if blob is not None and _unframe(blob)[0] != _EMPTY
            }
            yield CheckpointTuple(
                config=_config(thread_id, ns, s.checkpoint_id),
                checkpoint={**checkpoint, "channel_values": values},
                metadata=s.metadata,
                parent_config=_config(thread_id, ns, s.parent_id) if s.parent_id else None,
                pending_writes=self._pending_writes(writes),
            )

    def _thread_ids_plan(self) -> Generator[_Scan, Any, tuple[str, ...]]:
        """Every thread with checkpoints, by SCAN over the registries (an admin path: it walks
        the whole keyspace, of every primary on a Redis Cluster)."""
        head, _, tail = self._thread("\0").registry.partition("\0")
        names = yield _Scan(_glob_escape(head) + "*" + _glob_escape(tail), "set")
        # A set: SCAN may return a key twice.
        return tuple(sorted({name.decode()[len(head) : -len(tail)] for name in names}))

    # --- encoding -------------------------------------------------------------------------------
    def _thread(self, thread_id: Any) -> _ThreadKeys:
        return _ThreadKeys(self.keys.checkpoint_prefix(str(thread_id)))

    def _expire(self, *keys: str) -> tuple[Command, ...]:
        if self.ttl is None:
            return ()
        ms = max(1, round(self.ttl * 1000))
        return tuple(("PEXPIRE", key, ms) for key in keys)

    def _dump(self, value: Any) -> bytes:
        type_, data = self.serde.dumps_typed(value)
        return _frame(type_.encode(), data)

    def _load(self, typed: bytes) -> Any:
        type_, data = _unframe(typed)
        return self.serde.loads_typed((type_.decode(), data))

    def _decode(self, member: bytes) -> _Saved:
        checkpoint_id, _, record = member.partition(_SEP)
        checkpoint, metadata, parent_id = _unframe(record)
        return _Saved(checkpoint_id.decode(), parent_id.decode(), self._load(metadata), checkpoint)

    def _pending_writes(self, stored: dict[bytes, bytes]) -> builtins.list[PendingWrite]:
        """In ``writes_sort_key`` order, which is how LangGraph applies a superstep's writes."""
        rows = []
        for field, payload in stored.items():
            task_id, _, idx = field.decode().rpartition(":")
            channel, task_path, value = _unframe(payload)
            rows.append((writes_sort_key(task_path.decode(), task_id, int(idx)), channel, value))
        rows.sort(key=lambda row: row[0])
        return [(key[1], channel.decode(), self._load(value)) for key, channel, value in rows]


async def _ascan(client: AsyncClient, scan: _Scan, gate: asyncio.Semaphore | None) -> list[Any]:
    keys = client.scan_iter(match=scan.pattern, count=_SCAN_COUNT, _type=scan.type)
    if gate is None:
        return [key async for key in keys]
    async with gate:
        return [key async for key in keys]


def _config(thread_id: Any, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def _saved_config(config: RunnableConfig, checkpoint_id: str) -> RunnableConfig:
    """What ``put`` returns: the config it was given, now naming the checkpoint just stored."""
    conf = config["configurable"]
    return _config(conf["thread_id"], conf.get("checkpoint_ns", ""), checkpoint_id)


def _member_range(checkpoint_id: str) -> tuple[bytes, bytes]:
    """The lex range holding exactly the sorted-set member of ``checkpoint_id``."""
    cid = checkpoint_id.encode()
    return b"[" + cid + _SEP, b"(" + cid + b"\x01"


def _blob_field(channel: str, version: str | int | float) -> str:
    return f"{channel}:{version}"


def _matches(metadata: CheckpointMetadata, filter: dict[str, Any] | None) -> bool:
    return not filter or all(metadata.get(k) == v for k, v in filter.items())


def _frame(*parts: bytes) -> bytes:
    """Length-prefixed concatenation: binary-safe, and cheaper than another serializer pass."""
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def _unframe(data: bytes) -> list[bytes]:
    parts, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        parts.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return parts


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
