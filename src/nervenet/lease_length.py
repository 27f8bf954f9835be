"""How long this process's run leases last: ``lease_ttl``, stretched while its renewals come late.

A lease says "this process is alive and runs this run": another process takes the run over
once its lease went by without a renewal. A process whose event loop is starved (threads
holding the GIL, as a CrewAI kickoff's do; more runs than its cores finish) renews late, and
past a lease a peer took its runs although it was alive; the starved process then claimed
runs back once the peer's renewals came late in turn. On the CrewAI recovery benchmark on a
starved 2-core machine, the survivor-to-be took runs of the live coordinator 199-336 times
before it was killed, and those runs' agent tasks ran twice.

So a lease covers the lateness of the renewals it has to survive, as an accrual failure
detector adapts to the heartbeats it observes (Cassandra's and Akka's): each renewal pushes
the lease to ``lease_ttl`` plus :data:`LATENESS_MARGIN` times the worst recent lateness (a gap
between two renewals beyond ``heartbeat_interval``, once it is over two of them), never longer
than :data:`MAX_STRETCH` times ``lease_ttl``; the remembered lateness shrinks by :data:`DECAY`
at each renewal, so the lease comes back to ``lease_ttl`` a few seconds after renewals are on
time again. Still liveness by heartbeat: a dead process renews nothing, and its runs are taken
over when the last lease it pushed runs out, ``lease_ttl`` after its death if it was keeping
up, at most ``MAX_STRETCH * lease_ttl`` if it was starved. Nothing can foresee the first stall
longer than a lease: that one may still lose runs (which is safe: see
``Workflows.still_owns``); a process that stalls again keeps them.
"""

from __future__ import annotations

#: A lease outlasts ``lease_ttl`` by this many times the worst recent lateness of a renewal.
LATENESS_MARGIN = 2.0
#: The longest lease, in multiples of ``lease_ttl``: how late a starved process's death may be
#: noticed.
MAX_STRETCH = 5.0
#: How much of the worst lateness is still remembered at the next renewal.
DECAY = 0.9


class LeaseLength:
    """The length of the leases this process pushes, from the gaps between its renewals."""

    def __init__(self, lease_ttl: float, heartbeat_interval: float) -> None:
        self.lease_ttl = lease_ttl
        self.heartbeat_interval = heartbeat_interval
        self._worst_lateness = 0.0

    @property
    def seconds(self) -> float:
        """How long the next lease pushed lasts (and the last one renewed, until then)."""
        return min(self.lease_ttl + LATENESS_MARGIN * self._worst_lateness, self.longest)

    @property
    def longest(self) -> float:
        """The longest lease any process with these settings pushes."""
        return MAX_STRETCH * self.lease_ttl

    @property
    def stretched(self) -> bool:
        return self.seconds > self.lease_ttl

    def renewing(self, gap: float) -> None:
        """A renewal is going out ``gap`` seconds after the previous one went out. A gap of up
        to two heartbeat intervals is on time: ``lease_ttl`` (at least that long) covers it,
        and the jitter of a busy loop does not stretch leases."""
        lateness = gap - self.heartbeat_interval if gap > 2 * self.heartbeat_interval else 0.0
        remembered = DECAY * self._worst_lateness
        if remembered < self.heartbeat_interval / 10:
            remembered = 0.0  # forgotten, rather than stretched by a sliver for ever
        self._worst_lateness = max(lateness, remembered)
