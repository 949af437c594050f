"""MLflow tracking of training runs (``bigearthnet train|evaluate|run --mlflow``, config
``tracking.mlflow``).

One MLflow run per training run folder; its id is kept in ``RUN/mlflow.json``, so ``--resume``
continues the same MLflow run and ``evaluate`` and ``run`` add to it:

==========================  ============================================================  =====
what                        MLflow                                                        who
==========================  ============================================================  =====
resolved TrainConfig        params (nested keys joined by ``.``: ``tracking.mlflow``)      driver
dataset                     tags ``dataset``, ``dataset_manifest_sha256`` (SHA-256 of its  driver
                            ``manifest.json``), ``model``, ``label_set``
each epoch                  metrics ``train_loss``, ``val_precision|recall|f1|f2``           rank 0
                            (sample-based), ``val_micro_f1``, ``val_macro_f1``,
                            ``val_map_macro``, ``img_per_s``, ``epoch_seconds``; step = epoch
the best checkpoint         the model ``model`` (pt2 program, signature float32                rank 0
                            ``(-1, C, 120, 120)`` normalised bands -> ``(-1, K)``
                            probabilities) and ``best_epoch``, ``best_val_f1``
``evaluate``                ``<split>_precision|recall|f1|f2``, micro/macro F1, mAP,          driver
                            ``<split>_class_f1/<class>`` per class; artifacts
                            ``eval/<split>/``: metrics.json and the plots
``run``                     ``report/report.md`` and ``report/summary.json`` artifacts       driver
==========================  ============================================================  =====

With DDP only rank 0 logs (the other ranks never open the store). The driver creates the MLflow
run before the launcher starts the processes and ends it after (``FINISHED``, or ``FAILED`` when
training raised).

**Where it goes.** ``tracking.uri`` when set; else MLflow's own default when one is configured
(``MLFLOW_TRACKING_URI``, or a Databricks runtime, where it is the workspace's tracking server
and the experiment defaults to the notebook's); else a local store next to the run folders:
``<parent of RUN>/mlruns/mlflow.db`` (SQLite) with artifacts in ``<parent of RUN>/mlruns/
artifacts``. The local store is MLflow's SQLite backend, not its ``./mlruns`` file store: MLflow
3.x refuses the file store unless ``MLFLOW_ALLOW_FILE_STORE`` is set ("maintenance mode"). Browse
it with ``mlflow ui --backend-store-uri sqlite:///<path>/mlflow.db``.

MLflow's anonymous usage telemetry is turned off (``MLFLOW_DISABLE_TELEMETRY``) unless the
environment says otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bigearthnet.errors import BigEarthNetError, ConfigError, register
from bigearthnet.train.config import DEFAULT_EXPERIMENT, TrackingConfig, TrainConfig
from bigearthnet.train.rundir import TRAIN_LOG

__all__ = [
    "MLFLOW_JSON",
    "EpochTracker",
    "dataset_digest",
    "end_training_run",
    "log_evaluation",
    "log_report",
    "start_training_run",
    "worker_env",
]

log = logging.getLogger(__name__)

MLFLOW_JSON = "mlflow.json"
"""``RUN/mlflow.json``: ``{"tracking_uri", "experiment_id", "run_id"}`` of the run's MLflow run."""

LOCAL_STORE = "mlruns"


@register
class TrackingError(BigEarthNetError):
    """MLflow tracking is asked for but cannot work (not installed, store unreachable)."""


# --------------------------------------------------------------------------------------------
# helpers


def _mlflow():
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow
    except ImportError as exc:  # pragma: no cover - the lock installs it
        raise TrackingError(
            f"--mlflow needs MLflow ({exc}); install the pinned requirements (make setup, or "
            "pip install -r requirements.lock), or use the runtime's MLflow on Databricks"
        ) from None
    return mlflow


def on_databricks() -> bool:
    """Running inside a Databricks runtime."""
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def resolve_uri(tracking: TrackingConfig, run_dir: str | os.PathLike[str]) -> str | None:
    """The tracking URI to use for a run folder (``None``: MLflow's own default)."""
    if tracking.uri:
        return tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI") or on_databricks():
        return None
    store = Path(run_dir).resolve().parent / LOCAL_STORE
    return f"sqlite:///{store / 'mlflow.db'}"


def _local_artifacts(uri: str | None) -> str | None:
    """The artifact root of a local SQLite store (next to the database)."""
    if uri and uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return None


def _client(uri: str | None):
    mlflow = _mlflow()
    if uri and uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return mlflow.MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def _using_uri(uri: str | None) -> Iterator[Any]:
    """MLflow's process-wide tracking URI set to ``uri`` for the fluent APIs, restored after."""
    mlflow = _mlflow()
    before_env = os.environ.get("MLFLOW_TRACKING_URI")
    before = mlflow.get_tracking_uri()
    if uri:
        mlflow.set_tracking_uri(uri)
    try:
        yield mlflow
    finally:
        if uri:
            mlflow.set_tracking_uri(before)
            if before_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = before_env


def dataset_digest(dataset: str | os.PathLike[str]) -> str:
    """SHA-256 of the dataset's ``manifest.json`` (which names every product, count and config)."""
    from bigearthnet.dataset.layout import DatasetLayout
    from bigearthnet.dataset.objectstore import local_dataset

    path = DatasetLayout(local_dataset(dataset)).manifest
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}`` (MLflow params are flat strings)."""
    out: dict[str, str] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return out


_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]+")


def metric_key(name: str) -> str:
    """A class name as an MLflow metric key (letters, digits and ``_-. /`` only)."""
    return _UNSAFE.sub("_", name).strip("_ ")


def _metrics(prefix: str, summary: dict[str, Any]) -> dict[str, float]:
    """Sample P/R/F1/F2, micro/macro F1 and mAP of a compute_metrics() summary."""
    s = summary["samples"]
    out = {f"{prefix}_{k}": float(s[k]) for k in ("precision", "recall", "f1", "f2")}
    out[f"{prefix}_micro_f1"] = float(summary["micro"]["f1"])
    out[f"{prefix}_macro_f1"] = float(summary["macro"]["f1"])
    if summary.get("map_macro") is not None:
        out[f"{prefix}_map_macro"] = float(summary["map_macro"])
    return out


def read_run_ref(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``RUN/mlflow.json`` (``None`` when the run was never tracked)."""
    path = Path(run_dir) / MLFLOW_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def _write_run_ref(run_dir: Path, ref: dict[str, Any]) -> None:
    tmp = run_dir / f".{MLFLOW_JSON}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(ref, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, run_dir / MLFLOW_JSON)


def _log_batch(client, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    import math
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in sorted(metrics.items())
             if v is not None and math.isfinite(float(v))]
    for i in range(0, len(items), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=items[i:i + 1000])


def epoch_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The MLflow metrics of one ``train_log.jsonl`` record."""
    out = {"train_loss": record["train_loss"], "img_per_s": record["img_per_s"],
           "epoch_seconds": record["seconds"]}
    out.update(_metrics("val", record["val"]))
    return out


# --------------------------------------------------------------------------------------------
# driver: the run around a training


def start_training_run(cfg: TrainConfig) -> dict[str, Any] | None:
    """Create (or, on ``resume``, reopen) the MLflow run of a prepared training run folder.

    Logs the resolved config as params and the dataset tags, writes ``RUN/mlflow.json``. A run
    resumed without an MLflow run gets a new one with the finished epochs logged from
    ``train_log.jsonl``.

    Args:
        cfg: the run's :class:`~bigearthnet.train.config.TrainConfig`.

    Returns:
        ``RUN/mlflow.json``'s content, or ``None`` when ``cfg.tracking.mlflow`` is off.

    Raises:
        TrackingError: MLflow is missing or the store cannot be opened.
        ConfigError: the experiment name is refused by the store.
    """
    if not cfg.tracking.mlflow:
        return None
    run_dir = Path(cfg.out)
    ref = read_run_ref(run_dir) if cfg.resume else None
    uri = ref["tracking_uri"] if ref else resolve_uri(cfg.tracking, run_dir)
    try:
        client = _client(uri)
        if ref is not None:
            client.update_run(ref["run_id"], status="RUNNING")
            client.set_tag(ref["run_id"], "resumed", "true")
            return ref
        experiment_id = _experiment_id(client, cfg.tracking, uri)
        name = cfg.tracking.run_name or f"{cfg.model}/{run_dir.name}"
        tags = {"model": cfg.model, "label_set": str(cfg.label_set), "dataset": str(cfg.dataset),
                "dataset_manifest_sha256": dataset_digest(cfg.dataset),
                "run_dir": str(run_dir.resolve()), "mlflow.runName": name}
        run = client.create_run(experiment_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        params = flatten(cfg.model_dump(mode="json"))
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i:i + 100])
        ref = {"tracking_uri": uri or _mlflow().get_tracking_uri(),
               "experiment_id": experiment_id, "run_id": run_id}
        if cfg.resume:  # epochs finished before tracking was turned on
            log = run_dir / TRAIN_LOG
            for line in (log.read_text().splitlines() if log.is_file() else []):
                record = json.loads(line)
                _log_batch(client, run_id, epoch_metrics(record), step=int(record["epoch"]))
    except BigEarthNetError:
        raise
    except Exception as exc:
        raise TrackingError(f"MLflow tracking at {uri or 'the default URI'} failed: {exc}") from exc
    _write_run_ref(run_dir, ref)
    return ref


def _experiment_id(client, tracking: TrackingConfig, uri: str | None) -> str:
    name = tracking.experiment
    if name is None and on_databricks() and uri is None:
        mlflow = _mlflow()
        return mlflow.tracking.fluent._get_experiment_id()  # the notebook's experiment
    name = name or DEFAULT_EXPERIMENT
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_local_artifacts(uri))
    except Exception as exc:
        raise ConfigError(
            f"MLflow experiment {name!r} cannot be created at {uri or 'the default URI'} ({exc}); "
            "set tracking.experiment (on Databricks a workspace path, /Users/<you>/bigearthnet)"
        ) from exc


def end_training_run(ref: dict[str, Any] | None, result: dict[str, Any] | None,
                     failed: bool = False) -> None:
    """Close the MLflow run of a training: ``FAILED`` or ``FINISHED`` (with the best epoch)."""
    if ref is None:
        return
    client = _client(ref["tracking_uri"])
    if result is not None and result.get("best_epoch") is not None:
        _log_batch(client, ref["run_id"], {"best_epoch": result["best_epoch"],
                                           "best_val_f1": result["best_val_f1"]})
    client.set_terminated(ref["run_id"], status="FAILED" if failed else "FINISHED")


def worker_env(cfg: TrainConfig) -> dict[str, str]:
    """Environment the training processes need to reach the tracking server (Databricks host
    and token on a Databricks driver); empty when not tracking or nothing is needed. Never
    written to disk."""
    if not cfg.tracking.mlflow:
        return {}
    env = {k: v for k, v in os.environ.items() if k.startswith(("MLFLOW_", "DATABRICKS_HOST",
                                                                 "DATABRICKS_TOKEN"))}
    if on_databricks():
        try:
            from mlflow.utils.databricks_utils import get_databricks_host_creds

            creds = get_databricks_host_creds()
            env.update({"DATABRICKS_HOST": creds.host, "DATABRICKS_TOKEN": creds.token or ""})
        except Exception as exc:  # noqa: BLE001 - outside a notebook: the cluster's environment
            log.warning("no Databricks credentials for the training processes' MLflow logging "
                        "(%s); they use the cluster's environment", exc)
    return env


# --------------------------------------------------------------------------------------------
# rank 0: per-epoch metrics and the best model


class EpochTracker:
    """Rank 0's handle on the run's MLflow run (see the module docstring).

    Args:
        ref: ``RUN/mlflow.json``'s content.
    """

    def __init__(self, ref: dict[str, Any]) -> None:
        self.ref = ref
        self.client = _client(ref["tracking_uri"])

    @classmethod
    def open(cls, cfg: TrainConfig, is_main: bool) -> EpochTracker | None:
        """The tracker of rank 0 of a tracked run; ``None`` elsewhere or when not tracking."""
        if not (cfg.tracking.mlflow and is_main):
            return None
        ref = read_run_ref(cfg.out)
        if ref is None:
            raise TrackingError(f"{Path(cfg.out) / MLFLOW_JSON} is missing: the MLflow run is "
                                "created by bigearthnet.train.launch.train before training")
        return cls(ref)

    def log_epoch(self, record: dict[str, Any]) -> None:
        """One finished epoch's metrics (step = the 1-based epoch)."""
        _log_batch(self.client, self.ref["run_id"], epoch_metrics(record),
                   step=int(record["epoch"]))

    def log_model(self, model: Any, example: Any, model_name: str,
                  class_names: list[str]) -> str:
        """Log ``model`` (the best checkpoint's weights) as the MLflow model ``model``.

        The logged program returns probabilities (sigmoid of the logits) for a float32 batch of
        normalised bands shaped like ``example``; its signature says so.

        Returns:
            The model URI.
        """
        import numpy as np
        import torch

        class Probabilities(torch.nn.Module):
            def __init__(self, net: torch.nn.Module) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.sigmoid(self.net(x))

        net = Probabilities(model).eval().cpu()
        # Two rows at least: an example of one row would fix the exported batch size to 1.
        rows = example[:2].detach().float().cpu()
        x = (rows if len(rows) > 1 else rows.repeat(2, 1, 1, 1)).numpy().astype(np.float32)
        with _using_uri(self.ref["tracking_uri"]) as mlflow:
            from mlflow.models import infer_signature

            with torch.inference_mode():
                y = net(torch.from_numpy(x)).numpy()
            # Created in the run's experiment (else MLflow picks the fluent default experiment,
            # whose artifacts may live under the working directory).
            logged = self.client.create_logged_model(
                self.ref["experiment_id"], name="model", source_run_id=self.ref["run_id"])
            info = mlflow.pytorch.log_model(
                net, name="model", run_id=self.ref["run_id"], model_id=logged.model_id,
                input_example=x,
                signature=infer_signature(x, y), serialization_format="pt2",
                metadata={"model": model_name, "class_names": class_names,
                          "input": "normalised bands (stats.json), 120x120, BatchTransform"},
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
        return info.model_uri


# --------------------------------------------------------------------------------------------
# evaluate and run


def _ref_for(run_dir: Path, tracking: TrackingConfig, cfg: TrainConfig) -> dict[str, Any]:
    ref = read_run_ref(run_dir)
    if ref is not None:
        return ref
    # A run trained without tracking: its own MLflow run now, with its config as params.
    tracked = cfg.model_copy(update={"tracking": tracking.model_copy(update={"mlflow": True}),
                                     "resume": False})
    ref = start_training_run(tracked)
    end_training_run(ref, None)
    return ref


def log_evaluation(run_dir: str | os.PathLike[str], cfg: TrainConfig,
                   doc: dict[str, Any]) -> dict[str, Any]:
    """Log an evaluation (``evaluate``'s returned document) to the run's MLflow run.

    A run trained without tracking gets its MLflow run now (with its config as params), where
    its ``tracking`` settings say.

    Args:
        run_dir: the training run folder.
        cfg: its saved config (:func:`bigearthnet.train.evaluate.load_run_config`).
        doc: :func:`bigearthnet.train.evaluate.evaluate`'s result (metrics, ``eval_dir``,
            ``files``).

    Returns:
        ``RUN/mlflow.json``'s content.
    """
    run = Path(run_dir)
    ref = _ref_for(run, cfg.tracking, cfg)
    client = _client(ref["tracking_uri"])
    split = doc["split"]
    metrics = _metrics(split, doc)
    for name, row in doc["per_class"].items():
        metrics[f"{split}_class_f1/{metric_key(name)}"] = float(row["f1"])
    _log_batch(client, ref["run_id"], metrics, step=int(doc.get("checkpoint_epoch") or 0))
    for name, path in sorted(doc.get("files", {}).items()):
        if name.endswith((".json", ".png")):
            client.log_artifact(ref["run_id"], path, artifact_path=f"eval/{split}")
    return ref


def log_report(runs: dict[str, Path], report: str | os.PathLike[str]) -> None:
    """Attach ``report.md`` and ``summary.json`` to every tracked run of a report."""
    folder = Path(report).parent
    for run_dir in runs.values():
        ref = read_run_ref(run_dir)
        if ref is None:
            continue
        client = _client(ref["tracking_uri"])
        for name in ("report.md", "summary.json"):
            if (folder / name).is_file():
                client.log_artifact(ref["run_id"], str(folder / name), artifact_path="report")
