"""``databricks.yml`` (the asset bundle) and the Sedona init script, checked statically and by
building the wheel and running the init script here."""

from __future__ import annotations

import configparser
import hashlib
import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from bigearthnet.spark.sedona import KRYO_REGISTRATOR, KRYO_SERIALIZER, SQL_EXTENSIONS, read_lock

ROOT = Path(__file__).resolve().parents[2]
INIT = ROOT / "scripts" / "databricks_init_sedona.sh"
WORKSPACE = "${workspace.file_path}/"


@pytest.fixture(scope="module")
def bundle() -> dict:
    return yaml.safe_load((ROOT / "databricks.yml").read_text())


def _strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def _job(bundle: dict) -> dict:
    (job,) = bundle["resources"]["jobs"].values()
    return job


def test_job_cluster_and_tasks(bundle):
    job = _job(bundle)
    (cluster,) = job["job_clusters"]
    new = cluster["new_cluster"]
    variables = bundle["variables"]
    # Spark 4.x: Databricks Runtime 17 or later, an ML GPU runtime (torch, MLflow, CUDA).
    runtime = variables["spark_version"]["default"]
    assert int(runtime.split(".")[0]) >= 17 and "gpu-ml" in runtime
    assert new["spark_version"] == "${var.spark_version}"
    assert new["node_type_id"] == "${var.gpu_node_type}" and "gpu_node_type" in variables
    # The Sedona init script from the repository, and the Spark conf Sedona needs: the same as
    # every local session and spark-submit get (bigearthnet.spark.sedona).
    (init,) = new["init_scripts"]
    assert init["workspace"]["destination"] == f"{WORKSPACE}scripts/databricks_init_sedona.sh"
    assert new["spark_conf"] == {"spark.sql.extensions": SQL_EXTENSIONS,
                                 "spark.serializer": KRYO_SERIALIZER,
                                 "spark.kryo.registrator": KRYO_REGISTRATOR}
    assert "BIGEARTHNET_SEDONA_JARS_DIR" in new["spark_env_vars"]
    # build -> train -> evaluate, each a notebook task with the wheel.
    tasks = {t["task_key"]: t for t in job["tasks"]}
    assert list(tasks) == ["build", "train", "evaluate"]
    assert [d["task_key"] for d in tasks["train"].get("depends_on", [])] == ["build"]
    assert [d["task_key"] for d in tasks["evaluate"].get("depends_on", [])] == ["train"]
    for task in tasks.values():
        assert task["job_cluster_key"] == cluster["job_cluster_key"]
        assert task["libraries"] == [{"whl": "./dist/*.whl"}]
    # The notebooks' widgets are what the tasks pass.
    from bigearthnet.notebooks import NOTEBOOKS

    for task in tasks.values():
        name = Path(task["notebook_task"]["notebook_path"]).stem
        assert set(task["notebook_task"]["base_parameters"]) <= {w.name for w in NOTEBOOKS[name]}
    assert tasks["train"]["notebook_task"]["base_parameters"]["use_gpu"] == "true"
    assert set(bundle["targets"]) == {"dev", "prod"}
    assert bundle["targets"]["dev"]["mode"] == "development"
    assert bundle["targets"]["prod"]["mode"] == "production"


def test_every_repository_path_exists(bundle):
    named = set()
    for s in _strings(bundle):
        if s.startswith("./"):
            named.add(s[2:])
        elif s.startswith(WORKSPACE):
            named.add(s[len(WORKSPACE):])
    assert {"notebooks/01_build_dataset.py", "notebooks/02_train.py",
            "notebooks/03_evaluate_report.py", "scripts/databricks_init_sedona.sh",
            "conf/paper.yaml", "dist/*.whl"} <= named
    for rel in sorted(named):
        if rel.startswith("dist/"):  # built by the artifact (test_wheel_builds_with_entry_points)
            continue
        assert (ROOT / rel).is_file(), f"databricks.yml names {rel}, which does not exist"
    assert os.access(INIT, os.X_OK)


def test_wheel_builds_with_entry_points(bundle, tmp_path):
    """The artifact's own build command, in a copy of the package sources."""
    (artifact,) = bundle["artifacts"].values()
    assert artifact["type"] == "whl" and artifact["path"] == "."
    command = shlex.split(artifact["build"])
    assert command[:5] == ["python", "-m", "pip", "wheel", "."] and "--no-deps" in command
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "lib", src / "lib", ignore=shutil.ignore_patterns(
        "__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, *command[1:]], cwd=src, check=True, capture_output=True,
                   timeout=600)
    wheels = list(src.glob("dist/*.whl"))  # what the tasks' library path matches
    assert len(wheels) == 1 and wheels[0].name.startswith("bigearthnet-")
    with zipfile.ZipFile(wheels[0]) as whl:
        names = set(whl.namelist())
        (ep_file,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = configparser.ConfigParser()
        entry_points.read_string(whl.read(ep_file).decode())
    scripts = dict(entry_points["console_scripts"])
    assert scripts == {"bigearthnet": "bigearthnet.cli:main"}
    for target in scripts.values():
        module, attr = target.split(":")
        assert f"{module.replace('.', '/')}.py" in names
        assert callable(getattr(importlib.import_module(module), attr))
    # What the notebooks import ships in the wheel, with the package data.
    assert {"bigearthnet/notebooks.py", "bigearthnet/spark/build.py",
            "bigearthnet/train/tracking.py"} <= names
    assert any(re.fullmatch(r"bigearthnet/data/.+\.csv", n) for n in names)


def _init_pins() -> list[tuple[str, str, str]]:
    text = INIT.read_text()
    block = text.split("# --- conf/sedona-jars.lock pins (begin) ---\n", 1)[1]
    block = block.split("# --- conf/sedona-jars.lock pins (end) ---", 1)[0]
    return [tuple(line.split()) for line in block.splitlines() if line.strip()]


def test_init_script_pins_the_lock():
    lock = [(j.coordinate, j.sha256, j.filename) for j in read_lock()]
    assert _init_pins() == lock


def _run_init(source: Path, target: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "BIGEARTHNET_SEDONA_JARS_DIR": str(source),
           "BIGEARTHNET_DATABRICKS_JARS": str(target)}
    env.pop("BIGEARTHNET_MAVEN_REPO", None)
    return subprocess.run(["bash", str(INIT)], env=env, capture_output=True, text=True, check=False,
                          timeout=120)


def test_init_script_installs_exactly_the_pinned_jars(tmp_path):
    from bigearthnet.spark.sedona import sedona_jar_paths

    jars = sedona_jar_paths()  # fetched by make setup (scripts/fetch_sedona_jars.sh)
    source = jars[0].parent
    target = tmp_path / "databricks-jars"
    done = _run_init(source, target)
    assert done.returncode == 0, done.stderr
    installed = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in target.iterdir()}
    assert installed == {name: sha for _, sha, name in _init_pins()}

    # A jar that is not the pinned one is refused, and the script fails.
    bad = tmp_path / "bad"
    bad.mkdir()
    for jar in jars:
        shutil.copy2(jar, bad / jar.name)
    victim = bad / jars[-1].name
    with victim.open("r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    target2 = tmp_path / "databricks-jars-2"
    done = _run_init(bad, target2)
    assert done.returncode != 0 and "SHA-256" in done.stderr and victim.name in done.stderr
    assert not (target2 / victim.name).exists()
