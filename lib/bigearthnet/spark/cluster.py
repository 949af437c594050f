"""Start and stop a standalone Spark cluster (master + workers) on localhost.

Uses pyspark's bundled ``bin/spark-class`` (the wheel ships no ``sbin/start-master.sh``). Meant
for tests, demos and single-machine trials of cluster mode; real clusters are started by their
own tooling and reached with ``--master spark://host:7077``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from bigearthnet.errors import BigEarthNetError
from bigearthnet.spark.session import python_env


class ClusterStartError(BigEarthNetError, RuntimeError):
    """The local standalone cluster did not come up."""


def spark_home() -> Path:
    """The installed pyspark package folder, which holds ``bin/spark-class`` and the jars."""
    import pyspark

    return Path(pyspark.__file__).parent


def free_port() -> int:
    """An unused TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive_workers(webui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{webui_port}/json/", timeout=2) as resp:
            return int(json.load(resp).get("aliveworkers", 0))
    except (OSError, ValueError):
        return 0


@contextlib.contextmanager
def standalone_cluster(
    workers: int = 2, cores_per_worker: int = 1, memory_per_worker: str = "3g",
    log_dir: str | Path | None = None, timeout_s: float = 90.0,
) -> Iterator[str]:
    """Run a master and ``workers`` workers on 127.0.0.1; yield the master URL.

    All daemons are stopped on exit, also when the body raises.
    """
    home = spark_home()
    spark_class = home / "bin" / "spark-class"
    port, webui = free_port(), free_port()
    env = dict(os.environ)
    env.update(python_env())
    env.update({"SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1",
                "SPARK_NO_DAEMONIZE": "1"})
    logs = Path(log_dir) if log_dir else Path.cwd() / ".spark-cluster-logs"
    logs.mkdir(parents=True, exist_ok=True)
    url = f"spark://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []

    def start(args: list[str], log_name: str) -> None:
        with open(logs / log_name, "wb") as log:
            procs.append(subprocess.Popen([str(spark_class), *args], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))

    try:
        start(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port",
               str(port), "--webui-port", str(webui)], "master.log")
        for i in range(workers):
            env["SPARK_WORKER_DIR"] = str(logs / f"work-{i}")
            start(["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores",
                   str(cores_per_worker), "--memory", memory_per_worker, "--webui-port",
                   str(free_port()), url], f"worker-{i}.log")
        deadline = time.monotonic() + timeout_s
        while _alive_workers(webui) < workers:
            dead = [p for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise ClusterStartError(
                    f"standalone cluster at {url} did not start {workers} workers within "
                    f"{timeout_s:.0f} s; see the logs in {logs}"
                )
            time.sleep(0.5)
        yield url
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, 15)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, 9)
                p.wait()
