"""A deadline on the worker's stop: SIGTERM ends the process within STOP_DEADLINE_SECONDS, whatever it is doing.

Faust stops gracefully (agents, then the consumer: a last commit and a LeaveGroup, so the group rebalances at
once instead of after a session timeout). What that waits on, measured (py-spy and the worker's log):
- a healthy worker, busy or idle, and one in changelog recovery: nothing but mode's shutdown, which slept a fixed
  second before closing the event loop (1.1-1.5 s from SIGTERM to exit); that sleep is 0.1 s here;
- a worker joining the group (a rebalance): aiokafka's stop waits for the JoinGroup answer before it can send its
  LeaveGroup, and the local broker holds a follower's JoinGroup 3 s;
- a broker that is gone: the last commit and the LeaveGroup, retried until aiokafka's timeouts.
Past the deadline the process exits without finishing. That loses nothing: a batch's offsets are acknowledged
only after its writes and its checkpoint, so what was not committed is read again by whoever gets the partition,
and the checkpoint makes that replay exact (streams/app.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from typing import Any

import faust

log = logging.getLogger(__name__)

# Below the 5 s a supervisor (and docs/architecture.md) promises, with room for the interpreter to exit.
STOP_DEADLINE_SECONDS = 4.0
# How long the event loop runs on after the services stopped, before it is closed (mode's is a second): enough
# for the callbacks that closing connections scheduled.
LOOP_DRAIN_SECONDS = 0.1


def _exit_now(deadline: float) -> None:
    log.warning("the worker did not stop within %.0fs of the signal; exiting now (what was not committed is "
                "read again by the next owner of its partitions)", deadline)  # fmt: skip
    logging.shutdown()
    os._exit(0)


class PromptWorker(faust.Worker):
    """Faust's worker with the stop deadline armed at the first SIGTERM or SIGINT."""

    stop_deadline_seconds = STOP_DEADLINE_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: threading.Timer | None = None

    def _schedule_shutdown(self, signal: signal.Signals) -> None:
        if self._deadline is None:
            # A thread, not the event loop: the loop may be what is stuck.
            self._deadline = threading.Timer(self.stop_deadline_seconds, _exit_now, (self.stop_deadline_seconds,))
            self._deadline.daemon = True
            self._deadline.start()
        super()._schedule_shutdown(signal)

    async def _sentinel_task(self) -> None:
        await asyncio.sleep(LOOP_DRAIN_SECONDS)
