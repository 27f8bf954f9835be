"""Pool settings that make failure detection fast enough for tests (seconds, not tens)."""

from nervenet import PoolSettings

FAST = PoolSettings(heartbeat_interval=0.2, visibility_timeout=1.0, lease_ttl=1.0)
