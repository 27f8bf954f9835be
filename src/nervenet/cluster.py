"""Redis Cluster: telling a cluster from a single server, and opening the right client for it.

A URL names one node. ``redis://host:port/0`` works for both kinds: the node is asked whether it
runs in cluster mode (``INFO cluster``) and a cluster client is opened if it does, which discovers
every other node from it and follows ``MOVED``/``ASK`` redirections. ``redis+cluster://`` (or
``rediss+cluster://``) says a cluster is expected, so a URL that points at a single server by
mistake is refused instead of silently working on that one server.

Everything nervenet sends on a cluster must touch one slot per command; :mod:`nervenet.keys`
chooses the hash tags that make that hold, and :class:`~nervenet.transport.RedisTransport`
splits what cannot be (multi-key reads) per slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster
from redis.crc import key_slot

from .errors import ConfigurationError, PoolConnectionError

PLAIN_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def slot_of(key: str) -> int:
    """The cluster slot of ``key`` (its hash tag's, if it has one)."""
    return int(key_slot(key.encode()))


@dataclass(frozen=True, slots=True)
class RedisUrl:
    """A Redis URL as nervenet reads it."""

    url: str
    """The URL as redis-py takes it (``+cluster`` removed from the scheme)."""
    cluster: bool | None
    """True: the URL asks for a cluster; None: find out from the server."""
    description: str
    """The URL as given, any password masked, for messages and logs."""

    @classmethod
    def parse(cls, url: str) -> RedisUrl:
        parts = urlsplit(url)
        description = mask_password(url)
        if parts.scheme in CLUSTER_SCHEMES:
            plain = parts._replace(scheme=CLUSTER_SCHEMES[parts.scheme]).geturl()
            return cls(plain, True, description)
        if parts.scheme not in PLAIN_SCHEMES:
            raise ConfigurationError(
                f"unsupported Redis URL scheme {parts.scheme!r} in {description!r}; use "
                "redis://host:port/db (a single server or any node of a cluster), rediss:// for "
                "TLS, redis+cluster:// to require a cluster, or unix:///path/to/socket"
            )
        return cls(url, None, description)

    @property
    def database(self) -> int:
        path = urlsplit(self.url).path.strip("/")
        return int(path) if path.isdigit() else 0

    def check_cluster_mode(self, enabled: bool) -> bool:
        """Whether to open a cluster client, given what the server said; refuse mismatches."""
        if self.cluster and not enabled:
            raise PoolConnectionError(
                f"{self.description} asks for a Redis Cluster, but that server runs without "
                "cluster mode; use redis:// for a single server"
            )
        if enabled and self.database != 0:
            raise ConfigurationError(
                f"{self.description} is a Redis Cluster node, and a cluster has database 0 "
                "only; end the URL with /0"
            )
        return enabled


def mask_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def cluster_enabled(info: Any) -> bool:
    """Whether an ``INFO`` (or ``INFO cluster``) reply says the server runs in cluster mode."""
    return bool(int(info.get("cluster_enabled", 0)))


def is_cluster_sync(url: RedisUrl) -> bool:
    """Ask the node ``url`` names whether it runs in cluster mode (one short connection)."""
    if urlsplit(url.url).scheme == "unix":
        return url.check_cluster_mode(False)
    # Database 0: a cluster node refuses SELECT, and the URL's database is checked below.
    probe = redis.Redis.from_url(url.url, socket_connect_timeout=5, db=0)
    try:
        enabled = cluster_enabled(probe.info("cluster"))
    finally:
        probe.close()
    return url.check_cluster_mode(enabled)


async def is_cluster(url: RedisUrl) -> bool:
    """:func:`is_cluster_sync` for async callers."""
    if urlsplit(url.url).scheme == "unix":
        return url.check_cluster_mode(False)
    probe = aioredis.Redis.from_url(url.url, socket_connect_timeout=5, db=0)
    try:
        enabled = cluster_enabled(await probe.info("cluster"))
    finally:
        await probe.aclose()
    return url.check_cluster_mode(enabled)


def sync_client(url: str, **options: Any) -> redis.Redis | redis.cluster.RedisCluster:
    """A synchronous client for ``url``: a cluster client if the node runs in cluster mode.

    ``options`` go to the client (``decode_responses`` stays False: nervenet reads bytes).
    """
    parsed = RedisUrl.parse(url)
    if is_cluster_sync(parsed):
        return redis.cluster.RedisCluster.from_url(parsed.url, **options)
    return redis.Redis.from_url(parsed.url, **options)


async def async_client(url: str, **options: Any) -> aioredis.Redis | aiocluster.RedisCluster:
    """An asyncio client for ``url``: a cluster client if the node runs in cluster mode."""
    parsed = RedisUrl.parse(url)
    if await is_cluster(parsed):
        return aiocluster.RedisCluster.from_url(parsed.url, **options)
    return aioredis.Redis.from_url(parsed.url, **options)
