"""docker/: what can be checked without a Docker engine (there is none on these machines)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_base_image_is_official_spark_4_with_python():
    (base,) = [rest for word, rest in _instructions() if word == "FROM"]
    assert re.fullmatch(r"apache/spark:4\.\d+\.\d+-scala2\.13-java17-python3-ubuntu", base)


def test_every_copied_file_exists():
    copies = [shlex.split(rest) for word, rest in _instructions() if word == "COPY"]
    assert copies
    for args in copies:
        sources = [a for a in args[:-1] if not a.startswith("--")]
        for src in sources:
            assert (ROOT / src).exists(), src


def test_pip_installs_exactly_the_lock_then_the_package_without_deps():
    runs = [rest for word, rest in _instructions() if word == "RUN"]
    pip = [cmd for run in runs for cmd in run.split("&&") if "pip install" in cmd]
    assert len(pip) == 2
    assert "-r ${BIGEARTHNET_HOME}/requirements.lock" in pip[0]
    assert re.search(r"\s-r\s", pip[0]) and pip[0].count(" -r ") == 1
    assert "--no-deps" in pip[1] and "requirements" not in pip[1]
    copies = [rest for word, rest in _instructions() if word == "COPY"]
    assert any("requirements.lock" in c.split()[:-1] for c in copies)


def test_runs_as_a_non_root_user_with_the_sedona_jars():
    users = [rest for word, rest in _instructions() if word == "USER"]
    assert users[-1] == "bigearthnet"
    runs = " ".join(rest for word, rest in _instructions() if word == "RUN")
    assert "install_sedona_jars.sh ${BIGEARTHNET_HOME}/conf/sedona-jars.lock /opt/spark/jars" in runs


def test_compose_services_use_the_image_entry_points():
    doc = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = doc["services"]
    assert set(services) == {"spark-master", "spark-worker-1", "spark-worker-2", "demo"}
    entry_points = {"/opt/spark/bin/spark-class", "bigearthnet"}
    for name, svc in services.items():
        assert svc["build"]["dockerfile"] == "docker/Dockerfile"
        assert (ROOT / "docker" / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        assert svc["command"][0] in entry_points, name
    workers = [s for n, s in services.items() if n.startswith("spark-worker")]
    assert all(w["command"][-1] == "spark://spark-master:7077" for w in workers)
    assert services["demo"]["command"][:2] == ["bigearthnet", "run"]
    assert "spark://spark-master:7077" in services["demo"]["command"]
    # The console script the compose file calls is the package's own.
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'bigearthnet = "bigearthnet.cli:main"' in pyproject
