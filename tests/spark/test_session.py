"""The settings a local Spark session starts with (no JVM is started here, but in the last test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bigearthnet.config import SparkConfig
from bigearthnet.spark.session import QUICK_JVM_OPTIONS, session_conf

JAVA_OPTS = "spark.driver.extraJavaOptions"


@pytest.mark.parametrize(("master", "require_sedona", "quick", "expected"), [
    ("local[2]", False, True, QUICK_JVM_OPTIONS),
    ("local[*]", False, True, QUICK_JVM_OPTIONS),
    ("local[2]", True, True, None),  # sedona-spark joins run in the JVM: keep the C2 JIT
    ("spark://127.0.0.1:7077", False, True, None),  # clusters: the user's JVM settings
    ("local[2]", False, False, None),
])
def test_quick_jvm_only_for_local_jobs_without_jvm_work(master, require_sedona, quick, expected):
    conf = session_conf(SparkConfig(quick_jvm=quick), master, require_sedona, False)
    assert conf.get(JAVA_OPTS) == expected


def test_extra_conf_wins_over_quick_jvm():
    cfg = SparkConfig(extra_conf={JAVA_OPTS: "-Xss4m"})
    assert session_conf(cfg, "local[2]", False, False)[JAVA_OPTS] == "-Xss4m"


@pytest.mark.spark
def test_the_driver_jvm_really_runs_c1_only():
    """A fresh local session's JVM reports the flag through its own management bean."""
    code = (
        "import json\n"
        "from bigearthnet.config import SparkConfig\n"
        "from bigearthnet.spark.session import get_session\n"
        "s = get_session(SparkConfig(master='local[1]'))\n"
        "args = s.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()"
        ".getInputArguments()\n"
        "print(json.dumps([str(a) for a in args]))\n"
        "s.stop()\n"
    )
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    args = json.loads(proc.stdout.strip().splitlines()[-1])
    assert QUICK_JVM_OPTIONS in args
