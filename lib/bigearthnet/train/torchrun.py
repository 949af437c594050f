"""``torchrun`` for one TorchDistributor task, with a short exit barrier.

pyspark's TorchDistributor starts ``torch.distributed.run`` on every barrier task through its
``torch_run_process_wrapper``. torchrun's agents then meet in an *exit barrier* before they exit,
and torch hard-codes its timeout at 300 s: when one agent never arrives (measured here: the
agent of rank 1 gone before the barrier while rank 0 had finished), the other waits the full
5 minutes after the training has finished, and the job with it. Our ranks already leave the
training together (a final collective barrier), so the agents' barrier needs seconds, not
minutes: this launcher runs torchrun with :data:`EXIT_BARRIER_S`.

It does what pyspark's wrapper does, in one process: it stops (SIGTERM, as torchrun expects)
when the Spark task's Python worker that started it dies, and torchrun's output goes to the
task. Unlike that wrapper it exits with torchrun's status, so a failed rank fails its task.

Run as ``python -m bigearthnet.train.torchrun <torchrun arguments>``;
:func:`bigearthnet.spark.torch_distributor.run_torch_distributor` puts it in the command.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

EXIT_BARRIER_S = 30.0
"""Seconds an agent waits for the others after its worker finished (torch: 300)."""


def short_exit_barrier(seconds: float = EXIT_BARRIER_S) -> None:
    """Make torchrun's LocalElasticAgent wait at most ``seconds`` in its exit barrier."""
    from torch.distributed.elastic.agent.server.local_elastic_agent import LocalElasticAgent

    init = LocalElasticAgent.__init__
    if getattr(init, "exit_barrier_s", None) == seconds:
        return

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("exit_barrier_timeout", seconds)
        init(self, *args, **kwargs)

    __init__.exit_barrier_s = seconds  # type: ignore[attr-defined]
    LocalElasticAgent.__init__ = __init__  # type: ignore[method-assign]


def _stop_with_parent() -> None:
    """SIGTERM this process when its parent (the Spark task's Python worker) dies."""
    parent = os.getppid()
    try:  # Linux: the kernel sends the signal
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        pass

    def watch() -> None:  # elsewhere (and if the parent died before prctl): poll
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def main(argv: list[str]) -> None:
    """Run ``torch.distributed.run`` with ``argv`` and the short exit barrier."""
    _stop_with_parent()
    short_exit_barrier()
    print(f"bigearthnet.train.torchrun: torch.distributed.run (exit barrier {EXIT_BARRIER_S:g} s) "
          + " ".join(argv), file=sys.stderr, flush=True)
    from torch.distributed import run

    run.main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
