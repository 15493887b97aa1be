"""A simulator worker that fails or dies ends the run with one line, not a traceback from another process."""

from __future__ import annotations

import pytest

from xvla.sim.workers import WorkerPool, receive
from xvla.utils import UserFacingError


class Flaky:
    def __init__(self, fail_on: str):
        self.fail_on = fail_on

    def handle(self, message):
        if message[0] == self.fail_on:
            raise RuntimeError("the renderer lost its GL context")
        return ("ok", message[1])

    def close(self):
        pass


@pytest.mark.parametrize("inline", [True, False])
def test_a_failing_worker_is_one_line(inline):
    with WorkerPool(1, Flaky, {"fail_on": "step"}, inline=inline) as pool:
        conn = pool.conns[0]
        conn.send(("reset", 7))
        assert receive(conn) == ("ok", 7)
        conn.send(("step", 1))
        with pytest.raises(
            UserFacingError, match="a simulator worker failed: RuntimeError: the renderer lost"
        ) as err:
            receive(conn)
        assert "\n" not in str(err.value)


def test_a_dead_worker_is_one_line():
    with WorkerPool(1, Flaky, {"fail_on": "never"}, inline=False) as pool:
        pool.procs[0].kill()
        pool.procs[0].join()
        with pytest.raises(UserFacingError, match="worker process died"):
            receive(pool.conns[0])
