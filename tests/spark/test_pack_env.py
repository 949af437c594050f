"""``bigearthnet pack-env``: the venv shipped with ``spark-submit --archives`` to workers that have
only the bare base Python (no package, no numpy, no pyarrow, no torch).

The cluster tests submit the ``jobs/`` entries to the 2-worker standalone cluster whose workers
start from the base interpreter; everything the executors import comes from the archive, which
Spark itself copies and unpacks in each executor's folder. Archives are large (see README,
"Running on a cluster"); every test removes its archive and the unpacked copies when it ends.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from importlib import resources
from pathlib import Path

import pytest

from bigearthnet.cli import main
from bigearthnet.config import BuildConfig, SparkConfig
from bigearthnet.packenv import PACK_INFO, PackEnvError, _plan, elf_needed, pack_env
from bigearthnet.spark.build import run_build
from bigearthnet.spark.cluster import spark_home, standalone_cluster

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
BASE_PYTHON = os.path.realpath(VENV / "bin" / "python")
GiB = 1 << 30


# --- what goes in (no archive written) ---------------------------------------------------------

def test_build_only_plan_leaves_out_torch_and_test_tools():
    entries, info = _plan(VENV, ["torch"], cpu_only=False)
    names = {e.arcname for e in entries}
    kept, left = set(info["dists"]), set(info["left_out"])
    assert {"bigearthnet", "numpy", "pyarrow", "pyspark", "rasterio", "sedonadb"} <= kept
    # torch, what needs it (torchvision) and what only it needs (CUDA, triton) stay out
    assert {"torch", "torchvision", "triton", "nvidia-cublas"} <= left
    assert not any(n.startswith("nvidia-") for n in kept)
    # test tools are not runtime dependencies
    assert {"pytest", "ruff", "geopandas", "scikit-learn"} <= left
    site = "lib/python3.11/site-packages"
    # the editable install goes in as a normal package, without its .pth
    assert f"{site}/bigearthnet/cli.py" in names and f"{site}/bigearthnet/data" not in names
    assert any(n.startswith(f"{site}/bigearthnet/data/") and n.endswith(".csv") for n in names)
    assert not any("__editable__" in n or "__pycache__/" in n and "/bigearthnet/" in n
                   for n in names)
    assert {"bin/python", "pyvenv.cfg", PACK_INFO} <= names
    assert info["base_python"] == BASE_PYTHON


def test_cpu_only_plan_keeps_what_torch_links():
    entries, info = _plan(VENV, [], cpu_only=True)
    names = {e.arcname for e in entries}
    assert "torch" in info["dists"] and "triton" in info["left_out"]
    libs = {Path(n).name for n in names if "/nvidia/" in n}
    # linked by libtorch_cuda.so, so needed to import torch even on a CPU
    assert {"libcublasLt.so.13", "libcudart.so.13", "libnccl.so.2", "libcudnn.so.9"} <= libs
    # loaded only when a GPU kernel asks for them
    assert not libs & {"libcudnn_engines_precompiled.so.9", "libcudnn_adv.so.9",
                       "libcusolverMg.so.12"}
    full = _plan(VENV, [], cpu_only=False)[1]["bytes"]
    assert info["bytes"] < full - GiB


def test_elf_needed_reads_dynamic_section():
    import torch

    lib = Path(torch.__file__).parent / "lib" / "libtorch_cuda.so"
    needed = elf_needed(lib)
    assert {"libcudart.so.13", "libcublasLt.so.13", "libtorch_cpu.so"} <= set(needed)
    assert elf_needed(Path(torch.__file__)) == []  # not an ELF file


def test_refusals(tmp_path, capsys):
    with pytest.raises(PackEnvError, match="Java untar"):
        pack_env(tmp_path / "env.tar")
    with pytest.raises(PackEnvError, match="not a virtual environment"):
        pack_env(tmp_path / "env.tar.gz", prefix=tmp_path)
    with pytest.raises(PackEnvError, match="--without nosuchdist: not installed"):
        pack_env(tmp_path / "env.tar.gz", without=["nosuchdist"])
    (tmp_path / "old.tar.gz").write_bytes(b"x")
    assert main(["pack-env", str(tmp_path / "old.tar.gz")]) == 2
    err = capsys.readouterr().err
    assert "PackEnvError" in err and "--overwrite" in err
    assert (tmp_path / "old.tar.gz").read_bytes() == b"x"
    assert not list(tmp_path.glob(".*tmp*"))


# --- the cluster -------------------------------------------------------------------------------

def _free() -> int:
    return shutil.disk_usage(Path.home()).free


@pytest.fixture
def bare_workers(monkeypatch):
    """Environment under which standalone_cluster starts workers on the bare base Python."""
    assert BASE_PYTHON != sys.executable
    for module in ("numpy", "pyarrow", "bigearthnet"):
        probe = subprocess.run([BASE_PYTHON, "-c", f"import {module}"], capture_output=True,
                               text=True, check=False)
        assert f"No module named '{module}'" in probe.stderr
    monkeypatch.setenv("PYSPARK_PYTHON", BASE_PYTHON)
    monkeypatch.setenv("PYSPARK_DRIVER_PYTHON", BASE_PYTHON)
    monkeypatch.setenv("PATH", os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if not p.startswith(str(VENV))))
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.delenv("PYTHONPATH", raising=False)


def submit(url: str, archive: Path, job: str, *args: str, timeout: int = 600,
           extra_conf: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """spark-submit ``jobs/<job>`` the documented way: the archive for the executors, this
    venv for the driver (client mode), the Sedona jars on the command line."""
    from bigearthnet.spark.sedona import sedona_jar_paths

    conf = {"spark.pyspark.python": "./environment/bin/python",
            "spark.pyspark.driver.python": sys.executable,
            "spark.files.useFetchCache": "false",
            "spark.executor.memory": "1g",
            "spark.sql.extensions": "org.apache.sedona.sql.SedonaSqlExtensions",
            "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
            "spark.kryo.registrator": "org.apache.sedona.core.serde.SedonaKryoRegistrator",
            **(extra_conf or {})}
    cmd = [str(spark_home() / "bin" / "spark-submit"), "--master", url,
           "--jars", ",".join(str(p) for p in sedona_jar_paths()),
           "--archives", f"{archive}#environment"]
    for key, value in conf.items():
        cmd += ["--conf", f"{key}={value}"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON",
                                                           "PYSPARK_DRIVER_PYTHON")}
    import time
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, str(REPO / "jobs" / job), *args], capture_output=True,
                          text=True, env=env, timeout=timeout, check=False)
    print(f"TIMING submit {job} {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return proc


def why(proc: subprocess.CompletedProcess) -> str:
    """The error lines of a failed submission (its stderr is mostly Spark's INFO log)."""
    lines = [ln for ln in proc.stderr.splitlines() if " INFO " not in ln]
    return "\n".join(lines[-80:])


def executor_dirs(logs: Path) -> list[Path]:
    """The executor folders the workers made (work-<i>/app-*/<executor id>)."""
    return sorted(p for p in logs.glob("work-*/app-*/*") if p.is_dir())


def drop_unpacked(logs: Path) -> None:
    """Remove the unpacked environments of finished applications (GBs each)."""
    for env in logs.glob("work-*/app-*/*/environment"):
        shutil.rmtree(env, ignore_errors=True)


def digests(ds: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((ds / "patches").rglob("*.parquet"))}


@pytest.mark.cluster
@pytest.mark.spark
@pytest.mark.slow
def test_jobs_run_on_bare_workers_from_the_archive(world_jp2, tmp_path, request):
    """build and import-v1 run on both workers from a build-only archive (no torch); evaluate
    and report, which run in the driver, are submitted the same way."""
    if _free() < 10 * GiB:
        pytest.skip(f"needs about 8 GiB of free disk for the archive and its 3 unpacked copies; "
                    f"{_free() / GiB:.1f} GiB free")
    # The reference: the same build in this process's local Spark.
    clc = str(world_jp2 / "clc" / "clc2018.gpkg")
    local = tmp_path / "ds_local"
    run_build(BuildConfig(products=str(world_jp2 / "products"), clc=clc, out=str(local),
                          spark=SparkConfig(master="local[2]")))
    # A small evaluated-later run, trained here (training on the cluster: next test).
    from bigearthnet.dataset.fakes import write_fake_dataset
    from bigearthnet.train.config import TrainConfig
    from bigearthnet.train.launch import train

    learnable = write_fake_dataset(tmp_path / "learnable", recipe="learnable", compression="none")
    run_dir = tmp_path / "run"
    train(TrainConfig(dataset=str(learnable.root), out=str(run_dir), model="s-cnn-rgb", epochs=1,
                      label_set="19", batch_size=4, fc_width=16, num_workers=0, device="cpu",
                      progress=False, max_steps_per_epoch=2))

    archive = tmp_path / "env.tar.gz"
    logs = tmp_path / "cluster"
    request.addfinalizer(lambda: (archive.unlink(missing_ok=True),
                                  shutil.rmtree(logs, ignore_errors=True)))
    result = pack_env(archive, without=["torch"], level=1)
    print(f"TIMING {result.summary()}", file=sys.stderr)
    assert "torch" in result.left_out and result.base_python == BASE_PYTHON
    with tarfile.open(archive) as tar:
        python = tar.getmember("bin/python")
        assert python.issym()
        info = json.load(tar.extractfile(PACK_INFO))
    assert os.path.realpath(VENV / "bin" / python.linkname) == BASE_PYTHON
    assert info["without"] == ["torch"] and "torch" not in info["dists"]

    request.getfixturevalue("bare_workers")  # from here on, workers start on the base Python
    with standalone_cluster(workers=2, cores_per_worker=1, memory_per_worker="2g",
                            log_dir=logs) as url:
        out = tmp_path / "ds_cluster"
        proc = submit(url, archive, "build_dataset.py", "--products",
                      str(world_jp2 / "products"), "--clc", clc, "--out", str(out))
        assert proc.returncode == 0, why(proc)
        assert "dataset written to" in proc.stdout
        execs = executor_dirs(logs)
        assert {p.parts[-3] for p in execs} == {"work-0", "work-1"}
        for ex in execs:  # Spark unpacked the archive in each executor's folder
            assert (ex / "environment" / "bin" / "python").is_symlink()
            assert (ex / "environment" / PACK_INFO).is_file()
            stderr = (ex / "stderr").read_text()
            assert "Unpacking an archive" in stderr and "#environment" in stderr
        assert digests(out) == digests(local) and digests(out)
        drop_unpacked(logs)

        common = resources.files("bigearthnet_common")
        v1 = tmp_path / "v1"
        with tarfile.open(str(common.joinpath("BigEarthNet-S2-Example.tar.bz2"))) as tar:
            tar.extractall(v1, filter="data")
        imported = tmp_path / "ds_v1"
        proc = submit(url, archive, "import_v1.py", str(v1 / "BigEarthNet-S2-Example"),
                      "--out", str(imported))
        assert proc.returncode == 0, why(proc)
        manifest = json.loads((imported / "manifest.json").read_text())
        assert manifest["counts"]["patches_kept"] == 6
        assert len(executor_dirs(logs)) > len(execs)  # its own executors, on the workers
        drop_unpacked(logs)

        proc = submit(url, archive, "evaluate.py", "--run", str(run_dir))
        assert proc.returncode == 0, why(proc)
        assert (run_dir / "eval" / "metrics.json").is_file()
        proc = submit(url, archive, "report.py", str(run_dir), "--workdir",
                      str(tmp_path / "W"))
        assert proc.returncode == 0, why(proc)
        assert (tmp_path / "W" / "report" / "report.md").is_file()


def test_parallel_gzip_is_one_valid_gzip_file(tmp_path, monkeypatch):
    import gzip
    import random

    from bigearthnet.packenv import ParallelGzip

    monkeypatch.setattr(ParallelGzip, "BLOCK", 1000)  # many members
    rng = random.Random(3)
    data = bytes(rng.getrandbits(8) for _ in range(25_000)) + b"a" * 30_000
    path = tmp_path / "x.gz"
    with open(path, "wb") as raw, ParallelGzip(raw, 1, threads=3) as gz:
        for i in range(0, len(data), 777):
            gz.write(data[i:i + 777])
    assert gzip.decompress(path.read_bytes()) == data
    proc = subprocess.run(["gzip", "-dc", str(path)], capture_output=True, check=True)
    assert proc.stdout == data
    with open(tmp_path / "empty.gz", "wb") as raw, ParallelGzip(raw, 1):
        pass
    assert gzip.decompress((tmp_path / "empty.gz").read_bytes()) == b""


TRAIN_ARCHIVE = {"without": ["pyspark"], "cpu_only": True}
"""The training archive: torch for CPU executors (``--cpu-only``); pyspark stays out because the
executors import Spark's own ``pyspark.zip``, which the worker's Spark puts first on their
``PYTHONPATH``."""


@pytest.mark.cluster
@pytest.mark.spark
@pytest.mark.slow
def test_torch_distributor_training_from_the_archive(tmp_path, request):
    """jobs/train.py through TorchDistributor: 2 DDP ranks on a worker that has only the base
    Python; torch, numpy, pyarrow and the package come from a --cpu-only archive."""
    unpacked = _plan(VENV, TRAIN_ARCHIVE["without"], TRAIN_ARCHIVE["cpu_only"])[1]["bytes"]
    # The archive (~0.6 of the files), Spark's copies of it for the driver and the executor,
    # and two unpacked copies (the driver unpacks it too, even in client mode).
    need = 2 * unpacked + 3 * 0.6 * unpacked + 2 * GiB
    if _free() < need:
        pytest.skip(f"the torch archive needs about {need / GiB:.0f} GiB of free disk on the "
                    f"cluster's disk ({unpacked / GiB:.1f} GiB unpacked, copied 5 times); "
                    f"{_free() / GiB:.1f} GiB free")
    from bigearthnet.dataset.fakes import write_fake_dataset

    learnable = write_fake_dataset(tmp_path / "learnable", recipe="learnable", compression="none")
    config = tmp_path / "tiny.yaml"
    config.write_text("label_set: '19'\nbatch_size: 4\nlr: 0.03\nmomentum: 0.9\nfc_width: 16\n"
                      "seed: 7\nnum_workers: 0\nbuffer_size: 32\ndevice: cpu\nprogress: false\n"
                      "max_steps_per_epoch: 2\n")
    archive = tmp_path / "torch-env.tar.gz"
    logs = tmp_path / "cluster"
    request.addfinalizer(lambda: (archive.unlink(missing_ok=True),
                                  shutil.rmtree(logs, ignore_errors=True)))
    result = pack_env(archive, without=TRAIN_ARCHIVE["without"],
                      cpu_only=TRAIN_ARCHIVE["cpu_only"], level=1)
    print(f"TIMING {result.summary()}", file=sys.stderr)
    assert "torch" in result.dists and "triton" in result.left_out

    request.getfixturevalue("bare_workers")
    # One worker with 2 cores: both barrier tasks in one executor, so one unpacked copy there.
    with standalone_cluster(workers=1, cores_per_worker=2, memory_per_worker="4g",
                            log_dir=logs) as url:
        run = tmp_path / "run"
        proc = submit(url, archive, "train.py", "--dataset", str(learnable.root),
                      "--model", "s-cnn-rgb", "--out", str(run), "--epochs", "1",
                      "--nproc", "2", "--config", str(config),
                      extra_conf={"spark.executor.memory": "3g"})
        assert proc.returncode == 0, why(proc)
        assert "run written to" in proc.stdout
    doc = json.loads((run / "result.json").read_text())
    assert doc["world_size"] == 2 and [r["rank"] for r in doc["ranks"]] == [0, 1]
    assert all(r["backend"] == "gloo" for r in doc["ranks"])
    assert len({r["pid"] for r in doc["ranks"]}) == 2
    (ex,) = executor_dirs(logs)
    for rank in doc["ranks"]:  # both ranks ran in the executor, next to its unpacked archive
        assert Path(rank["cwd"]).resolve() == ex.resolve()
    assert (ex / "environment" / "lib" / "python3.11" / "site-packages" / "torch").is_dir()
    assert "Unpacking an archive" in (ex / "stderr").read_text()
    assert (run / "checkpoints" / "last.pt").is_file()
    assert len((run / "train_log.jsonl").read_text().splitlines()) == 1
