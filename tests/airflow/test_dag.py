"""The Airflow DAG (dags/bigearthnet.py), run by Airflow 3 itself from its own cached venv
(scripts/airflow_env.py) with SQLite and a temporary AIRFLOW_HOME.

The end-to-end test runs ``airflow dags test`` against the 2-worker standalone cluster: a first
run builds a synthetic world of 2 products, trains, evaluates and reports; a second run, after
one more product landed, appends only that product; a third, with nothing new, skips all but
``discover``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bigearthnet.spark.cluster import free_port, spark_home, standalone_cluster
from worlds import T29UPU, T29UPV, T33UUP, synth_world

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import airflow_env

pytestmark = pytest.mark.interop
DAG_ID = "bigearthnet"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory) -> dict:
    """The cached Airflow venv's ``airflow`` command and an environment with a migrated SQLite
    metadata database in a temporary AIRFLOW_HOME."""
    try:
        binary = airflow_env.airflow_bin()
    except airflow_env.AirflowUnavailable as exc:
        pytest.skip(f"cannot build the Airflow venv: {exc}")
    home = tmp_path_factory.mktemp("airflow_home")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "PYSPARK", "VIRTUAL_ENV"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        # the SparkSubmitOperator runs `spark-submit` from PATH: the project's pyspark
        "PATH": f"{spark_home() / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "SPARK_LOCAL_IP": "127.0.0.1",
    })
    proc = subprocess.run([str(binary), "db", "migrate"], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"bin": str(binary), "python": str(Path(binary).with_name("python")), "env": env}


INSPECT = r"""
import json
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
bag = DagBag(dag_folder=__import__("os").environ["AIRFLOW__CORE__DAGS_FOLDER"])
dag = bag.dags.get("bigearthnet")
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": sorted(bag.dags),
    "downstream": {t: sorted(o.downstream_task_ids) for t, o in dag.task_dict.items()},
    "spark": sorted(t for t, o in dag.task_dict.items() if isinstance(o, SparkSubmitOperator)),
    "trigger_rules": {t: getattr(o.trigger_rule, "value", o.trigger_rule)
                      for t, o in dag.task_dict.items()},
    "timetable": type(dag.timetable).__name__,
    "schedule": str(dag.schedule),
    "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
    "params": sorted(dag.params.keys()),
}))
"""


def test_dag_imports_without_errors(airflow):
    proc = subprocess.run([airflow["python"], "-c", INSPECT], env=airflow["env"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["errors"] == {} and doc["dags"] == [DAG_ID]
    assert doc["downstream"] == {
        "discover": ["build_append", "build_first"], "build_first": ["train"],
        "build_append": ["train"], "train": ["evaluate"], "evaluate": ["report"], "report": []}
    assert doc["spark"] == ["build_append", "build_first", "evaluate", "report", "train"]
    assert doc["trigger_rules"]["train"] == "none_failed_min_one_success"
    assert doc["timetable"] == "CronTriggerTimetable" and doc["schedule"] == "@daily"
    assert doc["catchup"] is False and doc["max_active_runs"] == 1
    assert {"products", "clc", "dataset", "workdir", "master", "label_engine",
            "model"} <= set(doc["params"])


def dags_test(airflow, date: str, conf: dict, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([airflow["bin"], "dags", "test", DAG_ID, date, "-c", json.dumps(conf)],
                          env={**airflow["env"], **(env or {})}, capture_output=True, text=True,
                          timeout=1500, check=False)


def task_states(proc: subprocess.CompletedProcess) -> dict[str, str]:
    """Each task's final state, from ``airflow dags test``'s log."""
    states: dict[str, str] = {}
    current = None
    for line in (proc.stdout + proc.stderr).splitlines():
        if "[DAG TEST] running task <TaskInstance: bigearthnet." in line:
            current = line.split("<TaskInstance: bigearthnet.")[1].split()[0]
        elif "new_state=" in line and current:
            states[current] = line.split("new_state=")[1].split()[0]
        elif "Skipping tasks [" in line:
            for name in line.split("Skipping tasks [")[1].split("]")[0].split("('")[1:]:
                states[name.split("'")[0]] = "skipped"
    return states


def test_bad_products_folder_fails_discover(airflow, tmp_path):
    proc = dags_test(airflow, "2026-02-01", {"products": str(tmp_path / "none"),
                                             "dataset": str(tmp_path / "ds")})
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "InputNotFoundError" in out and str(tmp_path / "none") in out
    assert task_states(proc)["discover"] == "failed"


@pytest.mark.cluster
@pytest.mark.spark
@pytest.mark.slow
def test_dag_runs_end_to_end_and_appends_new_products(airflow, tmp_path):
    world = synth_world(tmp_path / "world", [T29UPU, T33UUP, T29UPV], 480, "jp2")
    later = tmp_path / "later"
    later.mkdir()
    shutil.move(str(world / "products" / f"{T29UPV}.SAFE"), later)
    train_config = tmp_path / "train.yaml"
    train_config.write_text("batch_size: 4\nfc_width: 16\nnum_workers: 0\ndevice: cpu\n"
                            "progress: false\nmax_steps_per_epoch: 2\nlabel_set: '19'\n")
    dataset, work, logs = tmp_path / "dataset", tmp_path / "work", tmp_path / "cluster"
    conf = {"products": str(world / "products"), "clc": str(world / "clc" / "clc2018.gpkg"),
            "dataset": str(dataset), "workdir": str(work), "model": "s-cnn-rgb", "epochs": 1,
            "nproc": 2, "train_config": str(train_config), "executor_memory": "1g",
            # no archive: the workers run this venv (the archive path: tests/spark/test_pack_env)
            "archive": "", "executor_python": sys.executable, "driver_python": sys.executable}

    def connection(url: str) -> dict:
        host, port = url.removeprefix("spark://").rsplit(":", 1)
        return {"AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(
            {"conn_type": "spark", "host": f"spark://{host}", "port": int(port)})}

    with standalone_cluster(workers=2, cores_per_worker=1, memory_per_worker="2g",
                            log_dir=logs) as url:
        # 1: the master from the spark_default connection; no dataset yet: the first build
        first = dags_test(airflow, "2026-03-01", conf, connection(url))
        assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-3000:]
        assert task_states(first) == {
            "discover": "success", "build_append": "skipped", "build_first": "success",
            "train": "success", "evaluate": "success", "report": "success"}
        report = work / "reports" / "20260301T000000" / "report" / "report.md"
        assert report.is_file() and "S-CNN-RGB" in report.read_text()
        run = work / "runs" / "20260301T000000" / "s-cnn-rgb"
        assert json.loads((run / "result.json").read_text())["world_size"] == 2
        assert (run / "eval" / "metrics.json").is_file()
        manifest = json.loads((dataset / "manifest.json").read_text())
        assert sorted(p["product_id"] for p in manifest["products"]) == sorted([T29UPU, T33UUP])
        apps = {p.name for p in logs.glob("work-*/app-*")}
        assert len(apps) >= 2  # the build and the training ran on the workers' executors

        # 2: one more product; the master from the `master` param (the connection now points
        # at a port nobody listens on)
        shutil.move(str(later / f"{T29UPV}.SAFE"), world / "products")
        dead = connection(f"spark://127.0.0.1:{free_port()}")
        second = dags_test(airflow, "2026-03-02", {**conf, "master": url}, dead)
        assert second.returncode == 0, second.stdout[-5000:] + second.stderr[-3000:]
        assert task_states(second) == {
            "discover": "success", "build_first": "skipped", "build_append": "success",
            "train": "success", "evaluate": "success", "report": "success"}
        manifest = json.loads((dataset / "manifest.json").read_text())
        assert len(manifest["products"]) == 3
        last = manifest["history"][-1]
        assert last["mode"] == "append" and last["products_added"] == [T29UPV]
        assert sorted(last["products_skipped_existing"]) == sorted([T29UPU, T33UUP])
        assert (work / "reports" / "20260302T000000" / "report" / "report.md").is_file()
        assert len({p.name for p in logs.glob("work-*/app-*")}) >= len(apps) + 2

        # 3: nothing new: discover skips the rest of the day's run
        third = dags_test(airflow, "2026-03-03", {**conf, "master": url}, dead)
        assert third.returncode == 0, third.stdout[-5000:] + third.stderr[-3000:]
        states = task_states(third)
        assert states == {"discover": "success", "build_first": "skipped",
                          "build_append": "skipped"}
        assert "DagRun Finished" in third.stdout + third.stderr
        assert not (work / "runs" / "20260303T000000").exists()
        assert json.loads((dataset / "manifest.json").read_text())["history"][-1] == last
