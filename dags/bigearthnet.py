"""Airflow 3 DAG: each day, add the new Sentinel-2 products to the dataset, then retrain.

    discover ─┬─> build_first ──┐
              └─> build_append ─┴─> train ─> evaluate ─> report

* ``discover`` runs ``bigearthnet discover`` with the project's Python: it lists the products
  under ``products`` that are not in ``dataset`` yet. Nothing new: every other task is skipped.
  No dataset yet: ``build_first``; else ``build_append`` (``bigearthnet build --append``).
* The other tasks are ``SparkSubmitOperator`` runs of the ``jobs/`` entries (client mode):
  the build and the TorchDistributor training run on the cluster's executors; evaluate and
  report run in the driver.
* Paths, master, label engine and model are DAG params (``airflow dags trigger -c`` or the
  trigger form override them per run). The Spark connection (``spark_default``; e.g. the
  ``AIRFLOW_CONN_SPARK_DEFAULT`` environment variable) gives the default master; the ``master``
  param, when set, replaces it for the run. ``spark-submit`` must be on the Airflow worker's
  ``PATH`` (the pyspark 4.0.5 of the project's venv has one in its ``bin/``).
* Executors get the package either from ``archive`` (``bigearthnet pack-env``, shipped with
  ``spark.archives``) or, with ``archive`` empty, from ``executor_python`` on every worker.

The DAG file imports only Airflow: the package runs in the project's own environment
(``driver_python``), never in Airflow's. See README, "Running on a cluster".
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Param, dag, task

REPO = Path(__file__).resolve().parents[1]
MODELS = ["s-cnn-rgb", "s-cnn-all", "inception-v3"]
ENGINES = ["sedonadb", "sedona-spark"]


class JobSubmit(SparkSubmitOperator):
    """``SparkSubmitOperator`` for the ``jobs/`` entries, with two additions.

    * ``master`` (templated): when it renders non-empty it replaces the connection's master.
    * Arguments and ``conf`` values that render empty are dropped, so optional flags can be
      written as ``"{{ '--config' if params.x else '' }}", "{{ params.x }}"``.
    """

    template_fields = (*SparkSubmitOperator.template_fields, "master")

    def __init__(self, *, master: str = "", **kwargs):
        super().__init__(**kwargs)
        self.master = master

    def execute(self, context):
        self.application_args = [a for a in self.application_args or [] if a != ""]
        self.conf = {k: v for k, v in (self.conf or {}).items() if v != ""}
        return super().execute(context)

    def _get_hook(self):
        hook = super()._get_hook()
        if self.master:
            hook._connection["master"] = self.master
        return hook


def _job(name: str) -> str:
    return "{{ params.jobs_dir }}/" + name


SPARK_CONF = {
    "spark.archives": "{{ params.archive ~ '#environment' if params.archive else '' }}",
    "spark.pyspark.python": "{{ params.executor_python }}",
    "spark.pyspark.driver.python": "{{ params.driver_python }}",
    "spark.executor.memory": "{{ params.executor_memory }}",
    # Sedona on the driver's class path, for label_engine sedona-spark (README).
    "spark.sql.extensions": "{{ 'org.apache.sedona.sql.SedonaSqlExtensions' if params.jars "
                            "else '' }}",
    "spark.serializer": "{{ 'org.apache.spark.serializer.KryoSerializer' if params.jars "
                        "else '' }}",
    "spark.kryo.registrator": "{{ 'org.apache.sedona.core.serde.SedonaKryoRegistrator' "
                              "if params.jars else '' }}",
}
RUN = "{{ params.workdir }}/runs/{{ ts_nodash }}/{{ params.model }}"
BUILD_ARGS = [
    "--products", "{{ params.products }}", "--clc", "{{ params.clc }}",
    "--out", "{{ params.dataset }}", "--label-engine", "{{ params.label_engine }}",
    "{{ '--config' if params.build_config else '' }}", "{{ params.build_config }}",
]


@dag(
    dag_id="bigearthnet",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # appends to one dataset never overlap
    tags=["bigearthnet"],
    params={
        "products": Param("/data/bigearthnet/products", type="string",
                          description="folder or s3:// prefix where new L2A products land"),
        "clc": Param("/data/bigearthnet/clc2018.gpkg", type="string",
                     description="CORINE Land Cover 2018 GeoPackage"),
        "dataset": Param("/data/bigearthnet/dataset", type="string",
                         description="the dataset the products are appended to"),
        "workdir": Param("/data/bigearthnet/work", type="string",
                         description="runs/<ts>/<model> and reports/<ts> are written here"),
        "master": Param("", type="string",
                        description="Spark master URL; empty: the spark_default connection's"),
        "label_engine": Param("sedonadb", enum=ENGINES),
        "model": Param("s-cnn-all", enum=MODELS),
        "epochs": Param(10, type="integer", minimum=1),
        "nproc": Param(2, type="integer", minimum=1,
                       description="TorchDistributor processes (barrier tasks)"),
        "build_config": Param("", type="string", description="BuildConfig YAML (optional)"),
        "train_config": Param("", type="string", description="TrainConfig YAML (optional)"),
        "archive": Param("", type="string",
                         description="env.tar.gz from `bigearthnet pack-env` for the executors; "
                                     "empty: the workers have executor_python"),
        "executor_python": Param("./environment/bin/python", type="string",
                                 description="the executors' Python (in the archive, or on "
                                             "every worker)"),
        "driver_python": Param(str(REPO / ".venv" / "bin" / "python"), type="string",
                               description="the project's Python on this Airflow worker "
                                           "(drivers run here, client mode)"),
        "jobs_dir": Param(str(REPO / "jobs"), type="string"),
        "jars": Param("", type="string",
                      description="comma-separated Sedona jars (label_engine sedona-spark)"),
        "executor_memory": Param("2g", type="string"),
    },
)
def bigearthnet():
    @task.branch
    def discover(params=None) -> list[str]:
        """The products not in the dataset yet; which build task runs (none: skip the day)."""
        proc = subprocess.run(
            [params["driver_python"], "-m", "bigearthnet.cli", "discover",
             "--products", params["products"], "--dataset", params["dataset"]],
            capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"bigearthnet discover failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[-2000:]}")
        found = json.loads(proc.stdout)
        print(f"discover: {len(found['new'])} new product(s) {found['new']}, "
              f"{len(found['present'])} already in {found['dataset']}, "
              f"{len(found['unresolved'])} unreadable {found['unresolved']}")
        if not found["new"]:
            return []  # nothing to add: the rest of the run is skipped
        return ["build_append"] if found["dataset_exists"] else ["build_first"]

    build_first = JobSubmit(
        task_id="build_first", application=_job("build_dataset.py"), master="{{ params.master }}",
        application_args=BUILD_ARGS, conf=SPARK_CONF, jars="{{ params.jars }}",
        name="bigearthnet-build")
    build_append = JobSubmit(
        task_id="build_append", application=_job("build_dataset.py"),
        master="{{ params.master }}", application_args=[*BUILD_ARGS, "--append"],
        conf=SPARK_CONF, jars="{{ params.jars }}", name="bigearthnet-append")
    train = JobSubmit(
        task_id="train", application=_job("train.py"), master="{{ params.master }}",
        trigger_rule="none_failed_min_one_success",  # after whichever build ran
        application_args=[
            "--dataset", "{{ params.dataset }}", "--model", "{{ params.model }}", "--out", RUN,
            "--epochs", "{{ params.epochs }}", "--nproc", "{{ params.nproc }}", "--overwrite",
            "{{ '--config' if params.train_config else '' }}", "{{ params.train_config }}",
        ],
        conf=SPARK_CONF, name="bigearthnet-train")
    evaluate = JobSubmit(
        task_id="evaluate", application=_job("evaluate.py"), master="{{ params.master }}",
        application_args=["--run", RUN], conf=SPARK_CONF, name="bigearthnet-evaluate")
    report = JobSubmit(
        task_id="report", application=_job("report.py"), master="{{ params.master }}",
        application_args=[RUN, "--workdir", "{{ params.workdir }}/reports/{{ ts_nodash }}"],
        conf=SPARK_CONF, name="bigearthnet-report")

    discover() >> [build_first, build_append] >> train >> evaluate >> report


bigearthnet()
