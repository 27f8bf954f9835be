"""The seam between nervenet and a Redis server: a real one, or an embedded in-process one.

Both transports hand out the same redis-py asyncio client API. A real server may be a Redis
Cluster (found out at start, see :mod:`nervenet.cluster`): the client is then redis-py's cluster
client, which routes each command to the primary holding its slot and follows ``MOVED``/``ASK``,
and the few multi-key commands nervenet sends (``XREADGROUP``/``XREAD`` over several streams,
``MGET``) are split per slot with :meth:`Transport.slot_groups` and :meth:`Transport.mget`.
The transports differ in one more thing: how a reader waits for new stream entries. A real
server blocks in ``XREAD(GROUP) BLOCK``. fakeredis answers ``XREADGROUP`` with ``BLOCK`` and
``COUNT`` at once instead of blocking, which would turn every read loop into a busy loop, so the
embedded transport reads without blocking and waits on an in-process signal raised whenever
nervenet wrote to a stream (all writers are in this process, so no write can be missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any, Protocol, cast

import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import parse_url
from redis.exceptions import AuthenticationError, BusyLoadingError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from .batching import execute_with_redis_py
from .cluster import RedisUrl, cluster_enabled, slot_of
from .errors import PoolConnectionError
from .resp import RespEndpoint, RespPipelines, RespReaders, stream_batch

log = logging.getLogger("nervenet.transport")

StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]
StreamBatch = list[tuple[bytes, StreamEntries]]

LOADING_WAIT = 60.0  # seconds a starting pool waits for a server still loading its dataset
CLUSTER_DOWN_WAIT = 30.0  # seconds a starting pool waits for a cluster to cover every slot


def as_bytes(value: object) -> bytes:
    """A reply value as bytes (nervenet's clients never decode responses)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"expected bytes from Redis, got {type(value).__name__}")


def as_text(value: object) -> str:
    return as_bytes(value).decode()


def _hiredis_packing_connection() -> type[aioredis.Connection] | None:
    try:
        import hiredis
    except ImportError:
        return None
    pack: Any = hiredis.pack_command

    class HiredisPackingConnection(aioredis.Connection):
        """Builds commands with hiredis in C. redis-py's async connection packs them in Python,
        which measured 26-29% of a busy coordinator's or worker's CPU."""

        def pack_command(self, *args: Any) -> list[bytes]:
            if isinstance(args[0], str):
                args = tuple(args[0].encode().split()) + args[1:]
            elif b" " in args[0]:
                args = tuple(args[0].split()) + args[1:]
            encode: Any = self.encoder.encode
            encoded = tuple(bytes(encode(a)) for a in args)
            packed: bytes = pack(encoded)
            return [packed]

    return HiredisPackingConnection


_HiredisPackingConnection = _hiredis_packing_connection()


def _stream_ids(streams: dict[str, str]) -> dict[Any, Any]:
    """redis-py's annotation for XREAD's stream map is narrower than what it accepts."""
    return dict(streams)


class Transport(Protocol):
    """What the pool needs from a Redis connection."""

    redis: aioredis.Redis
    """Async client; every command except blocking reads goes through it. On a cluster it is
    redis-py's cluster client, which has the same command methods."""
    description: str
    """Where it points, with any password masked, for logs and the status view."""
    is_cluster: bool
    """Whether the server is a Redis Cluster (known once :meth:`check` returned)."""
    primaries: int
    """Primaries serving the keyspace (1 unless a cluster)."""

    def slot_groups(self, keys: Iterable[str]) -> list[list[str]]:
        """``keys`` grouped so that each group may go in one multi-key command: one group on a
        single server, one per slot on a cluster."""
        ...

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        """``MGET`` of keys in any slots."""
        ...

    async def read_group(
        self, group: str, consumer: str, streams: dict[str, str], count: int, block_ms: int | None
    ) -> StreamBatch:
        """``XREADGROUP`` that waits up to ``block_ms`` for entries (None: returns at once)."""
        ...

    async def read(self, streams: dict[str, str], count: int, block_ms: int) -> StreamBatch:
        """``XREAD`` that waits up to ``block_ms`` for entries."""
        ...

    async def execute(self, pipe: Pipeline) -> list[Any]:
        """Send a non-transactional pipeline; its replies, an error reply in its command's
        place (redis-py's ``execute(raise_on_error=False)``)."""
        ...

    def notify_written(self) -> None:
        """Called after nervenet wrote stream entries (wakes embedded readers)."""
        ...

    async def check(self) -> None:
        """Fail fast with :class:`PoolConnectionError` if the server is unusable."""
        ...

    async def aclose(self) -> None: ...


class RedisTransport:
    """A real Redis or Valkey server, from ``redis://``, ``rediss://`` (TLS) or ``unix://`` URLs.

    Blocking reads hold their own connection for the duration of the block; the pool keeps one
    such reader per process for replies and one per worker, so connection use stays flat no
    matter how many workflows wait. On a single server reached by ``redis://`` or ``unix://``,
    blocking reads and the write batcher's pipelines go over :mod:`nervenet.resp`'s lean
    connections (``lean=True``, the default), everything else through redis-py.
    """

    def __init__(self, url: str, *, max_connections: int = 64, lean: bool = True) -> None:
        self.url = RedisUrl.parse(url)
        self.description = self.url.description
        self.is_cluster = False
        self.primaries = 1
        # A blocking pool makes a burst of commands queue for a connection instead of failing
        # with "Too many connections" (thousands of workflows share one process's pool).
        # hiredis packs commands for plain TCP connections (TLS and unix sockets keep theirs).
        self._packing = _HiredisPackingConnection if self.url.url.startswith("redis://") else None
        extra: dict[str, Any] = {}
        if self._packing is not None:
            extra["connection_class"] = self._packing
        connections = aioredis.BlockingConnectionPool.from_url(
            self.url.url,
            **extra,
            max_connections=max_connections,
            timeout=None,
            socket_connect_timeout=5,
            # Blocking reads wait block_ms on the server; the socket timeout must outlast them.
            socket_timeout=None,
            health_check_interval=15,
            # RESP2 whatever redis-py's default: the lean connections speak it, and their replies
            # go through this client's response callbacks, which must be RESP2's.
            protocol=2,
        )
        self.redis = aioredis.Redis(connection_pool=connections, decode_responses=False)
        self._lean_wanted = lean and self.url.url.startswith(("redis://", "unix://"))
        # Made once the server is known not to be a cluster (see check()).
        self._readers: RespReaders | None = None
        self._pipelines: RespPipelines | None = None

    async def read_group(
        self, group: str, consumer: str, streams: dict[str, str], count: int, block_ms: int | None
    ) -> StreamBatch:
        if self._readers is not None:
            block = () if block_ms is None else ("BLOCK", block_ms)
            reply = await self._readers.call(
                "XREADGROUP", "GROUP", group, consumer, "COUNT", count, *block,
                "STREAMS", *streams, *streams.values(), block_ms=block_ms,
            )  # fmt: skip
            return stream_batch(reply)  # type: ignore[return-value]
        result: Any = await self.redis.xreadgroup(
            group, consumer, _stream_ids(streams), count=count, block=block_ms
        )
        return list(result or [])

    async def read(self, streams: dict[str, str], count: int, block_ms: int) -> StreamBatch:
        if self._readers is not None:
            reply = await self._readers.call(
                "XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", *streams, *streams.values(),
                block_ms=block_ms,
            )  # fmt: skip
            return stream_batch(reply)  # type: ignore[return-value]
        result: Any = await self.redis.xread(_stream_ids(streams), count=count, block=block_ms)
        return list(result or [])

    async def execute(self, pipe: Pipeline) -> list[Any]:
        if self._pipelines is not None:
            return await self._pipelines.execute(pipe)
        return await execute_with_redis_py(pipe)

    def slot_groups(self, keys: Iterable[str]) -> list[list[str]]:
        if not self.is_cluster:
            return [list(keys)]
        groups: dict[int, list[str]] = {}
        for key in keys:
            groups.setdefault(slot_of(key), []).append(key)
        return list(groups.values())

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        if self.is_cluster:
            cluster = cast(aiocluster.RedisCluster, self.redis)
            values: list[Any] = await cluster.mget_nonatomic(keys)
        else:
            values = await self.redis.mget(keys)
        return values

    def notify_written(self) -> None:
        """A real server wakes blocked readers itself."""

    async def check(self) -> None:
        try:
            await self._ping_once_loaded()
            info = await self.redis.info()
            version = info.get("redis_version", "0")
        except AuthenticationError as exc:
            raise PoolConnectionError(
                f"Redis at {self.description} refused the credentials ({exc}); check the user "
                "and password in the URL"
            ) from exc
        except ResponseError as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise PoolConnectionError(
                    f"Redis at {self.description} needs a password: redis://:PASSWORD@host:port"
                ) from exc
            if "SELECT is not allowed in cluster mode" in str(exc):
                self.url.check_cluster_mode(True)  # raises: a cluster has database 0 only
            if "DB index is out of range" in str(exc):
                raise PoolConnectionError(
                    f"Redis at {self.description} has no database {self.url.database}: the "
                    "server's `databases` setting (16 by default) bounds the number at the end "
                    "of the URL"
                ) from exc
            raise
        except (RedisConnectionError, OSError) as exc:
            raise PoolConnectionError(
                f"cannot reach Redis at {self.description} ({exc}); start redis-server there, "
                "or point nervenet at another server (the URL given to Pool.from_url, --redis or "
                "NERVENET_REDIS_URL)"
            ) from exc
        if _version_tuple(str(version)) < (6, 2):
            raise PoolConnectionError(
                f"Redis at {self.description} is {version}; nervenet needs 6.2 or newer "
                "(XAUTOCLAIM, XADD NOMKSTREAM)"
            )
        if self.url.check_cluster_mode(cluster_enabled(info)):
            await self._open_cluster()
        elif self._lean_wanted and self._readers is None:
            endpoint = RespEndpoint(dict(parse_url(self.url.url)))
            self._readers = RespReaders(endpoint)
            encoder: Any = self.redis.get_encoder()  # type: ignore[no-untyped-call]
            self._pipelines = RespPipelines(endpoint, encoder.encode)

    async def _open_cluster(self) -> None:
        """Replace the single-node client by a cluster client once every slot is served."""
        await self._wait_cluster_ok()
        cluster = aiocluster.RedisCluster.from_url(
            self.url.url,
            socket_connect_timeout=5,
            socket_timeout=None,  # blocking reads wait block_ms on the server
            health_check_interval=15,
        )
        if self._packing is not None:
            # from_url drops a connection_class; the node manager makes every node it discovers
            # from these connection kwargs (the same dict), and the seed node exists already.
            cluster.get_connection_kwargs()["connection_class"] = self._packing
            for node in cluster.startup_nodes:
                node.connection_class = self._packing
        try:
            await cluster.initialize()
        except RedisError as exc:
            await cluster.aclose()
            raise PoolConnectionError(
                f"cannot reach every node of the Redis Cluster at {self.description} ({exc})"
            ) from exc
        single = self.redis
        # The cluster client has the same command methods as the single-server one.
        self.redis = cast(aioredis.Redis, cluster)
        self.is_cluster = True
        self.primaries = len(cluster.get_primaries())
        await single.aclose()
        await single.connection_pool.disconnect()
        log.info("Redis at %s is a cluster of %d primaries", self.description, self.primaries)

    async def _wait_cluster_ok(self) -> None:
        # A cluster with uncovered slots (a primary down, no replica to promote) refuses the
        # commands of those slots: wait a bounded while for it to heal, saying so once.
        deadline = asyncio.get_running_loop().time() + CLUSTER_DOWN_WAIT
        said = False
        while True:
            state = await self.redis.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
            text = as_text(state)
            if "cluster_state:ok" in text:
                return
            if asyncio.get_running_loop().time() >= deadline:
                raise PoolConnectionError(
                    f"the Redis Cluster at {self.description} is down (cluster_state is not "
                    f"ok after {CLUSTER_DOWN_WAIT:.0f} s: some slots have no live primary); "
                    "check `redis-cli -p PORT cluster info`"
                )
            if not said:
                log.warning(
                    "the Redis Cluster at %s is down (cluster_state:fail); waiting up to %.0f s",
                    self.description,
                    CLUSTER_DOWN_WAIT,
                )
                said = True
            await asyncio.sleep(0.5)

    async def _ping_once_loaded(self) -> None:
        # A restarted server accepts connections while it replays its AOF/RDB and answers
        # LOADING until done: a pool started in that window (a worker restarted beside Redis)
        # waits it out rather than failing as if the server were unreachable.
        deadline = asyncio.get_running_loop().time() + LOADING_WAIT
        while True:
            try:
                await self.redis.ping()
                return
            except BusyLoadingError:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                await asyncio.sleep(0.1)

    async def aclose(self) -> None:
        for lean in (self._readers, self._pipelines):
            if lean is not None:
                lean.close()
        await self.redis.aclose()
        if not self.is_cluster:  # a cluster client's aclose disconnects its node pools itself
            await self.redis.connection_pool.disconnect()


class EmbeddedTransport:
    """An in-process fakeredis server: nothing to install or start, for notebooks and tests."""

    description = "embedded (in-process fakeredis)"
    is_cluster = False
    primaries = 1

    def __init__(self) -> None:
        import fakeredis

        self.server = fakeredis.FakeServer()
        # FakeAsyncRedis is a redis.asyncio.Redis that talks to the in-process server.
        self.redis: aioredis.Redis = cast(
            aioredis.Redis, fakeredis.FakeAsyncRedis(server=self.server)
        )
        self._written: asyncio.Future[None] | None = None

    def sync_client(self) -> Any:
        """A synchronous client onto the same data (for sync APIs such as checkpointers)."""
        import fakeredis

        return fakeredis.FakeRedis(server=self.server)

    def slot_groups(self, keys: Iterable[str]) -> list[list[str]]:
        return [list(keys)]

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        values: list[Any] = await self.redis.mget(keys)
        return values

    async def read_group(
        self, group: str, consumer: str, streams: dict[str, str], count: int, block_ms: int | None
    ) -> StreamBatch:
        if block_ms is None:
            ready: Any = await self.redis.xreadgroup(
                group, consumer, _stream_ids(streams), count=count
            )
            return list(ready or [])
        return await self._wait_for(
            lambda: self.redis.xreadgroup(group, consumer, _stream_ids(streams), count=count),
            block_ms,
        )

    async def read(self, streams: dict[str, str], count: int, block_ms: int) -> StreamBatch:
        return await self._wait_for(
            lambda: self.redis.xread(_stream_ids(streams), count=count), block_ms
        )

    async def execute(self, pipe: Pipeline) -> list[Any]:
        return await execute_with_redis_py(pipe)

    async def _wait_for(self, read: Any, block_ms: int) -> StreamBatch:
        # Take the "something was written" signal before reading: a write that lands after the
        # read resolves this very future, so no wake-up is lost between reading and waiting.
        written = self._next_write()
        result = await read()
        if result:
            return list(result)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(written), block_ms / 1000)
        return list(await read() or [])

    def _next_write(self) -> asyncio.Future[None]:
        if self._written is None or self._written.get_loop() is not asyncio.get_running_loop():
            self._written = asyncio.get_running_loop().create_future()
        return self._written

    def notify_written(self) -> None:
        written, self._written = self._written, None
        if written is not None and not written.done():
            written.get_loop().call_soon_threadsafe(_resolve, written)

    async def check(self) -> None:
        await self.redis.ping()

    async def aclose(self) -> None:
        await self.redis.aclose()


def _version_tuple(version: str) -> tuple[int, ...]:
    numbers = []
    for part in version.split(".")[:2]:
        numbers.append(int(part) if part.isdigit() else 0)
    return tuple(numbers)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
