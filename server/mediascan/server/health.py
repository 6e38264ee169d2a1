"""What the health service says: SERVING once the server has started while no part of it reports
a problem; NOT_SERVING, and why, otherwise."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from grpc_health.v1 import health_pb2

log = logging.getLogger(__name__)


class HealthState:
    """The one place that decides what the health service says: SERVING once started while no
    problem is set. Any part of the server reports a problem of its own by name
    (`set_problem("database", True)`) and clears it when it is gone."""

    def __init__(self, servicer: Any, services: tuple[str, ...]) -> None:
        self._servicer = servicer
        self._services = services
        self._problems: set[str] = set()
        self._started = False
        self._updates: set[asyncio.Task[None]] = set()

    @property
    def problems(self) -> frozenset[str]:
        return frozenset(self._problems)

    async def start(self) -> None:
        """The server is ready: SERVING unless a problem is set."""
        self._started = True
        await self._publish()

    def set_problem(self, name: str, present: bool) -> None:
        """Set or clear one problem (on the loop); the status follows at once."""
        before = bool(self._problems)
        if present:
            if name not in self._problems:
                log.warning("health: NOT_SERVING (%s)", name)
            self._problems.add(name)
        else:
            self._problems.discard(name)
        if self._started and before != bool(self._problems):
            task = asyncio.get_running_loop().create_task(self._publish())
            self._updates.add(task)
            task.add_done_callback(self._updates.discard)

    async def _publish(self) -> None:
        status = (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if self._problems
            else health_pb2.HealthCheckResponse.SERVING
        )
        for name in self._services:
            await self._servicer.set(name, status)
