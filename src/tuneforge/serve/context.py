"""What every route of one server shares: the served backends (one per run, the first answers requests that name
no model), the model worker thread, the request limits; picking the run a request names, and awaiting the worker
within the request timeout."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future
from typing import Any

from tuneforge.serve.protocol import APIError, ServeLimits
from tuneforge.serve.worker import ModelWorker


class ServeContext:
    """The state of one server, shared by its routes."""

    def __init__(self, backends: list, worker: ModelWorker, limits: ServeLimits):
        self.backends = backends
        self.backend = backends[0]
        self.by_name = {b.name: b for b in backends}
        self.worker = worker
        self.limits = limits
        self.started = time.time()

    def pick(self, name: str | None):
        """The backend a request names in its `model` field; the first without one (or with one model)."""
        if name is None or len(self.backends) == 1:
            return self.backend
        if name not in self.by_name:
            raise APIError(
                404, f"the model '{name}' does not exist; available: {', '.join(self.by_name)}", "model_not_found"
            )
        return self.by_name[name]

    async def wait(self, future: Future) -> Any:
        """The worker's result for `future`; a 504 APIError when it takes longer than the request timeout."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=self.limits.request_timeout_s)
        except asyncio.TimeoutError:
            raise APIError(
                504, f"the model did not answer within {self.limits.request_timeout_s:g} s", "timeout", "server_error"
            ) from None
