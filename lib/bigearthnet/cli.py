"""Command-line interface: ``bigearthnet synth | build | import-v1 | import-v2 | export | train |
evaluate | report | discover | pack-env | run``.

The CLI parses arguments, resolves configs and calls the library; nothing else.
"""

from __future__ import annotations

import argparse
import logging
import sys
import typing
import warnings
from pathlib import Path

from bigearthnet.errors import BigEarthNetError
from bigearthnet.train.registry import MODEL_NAMES

log = logging.getLogger("bigearthnet")


def _cmd_synth(args: argparse.Namespace) -> int:
    from bigearthnet.config import resolve
    from bigearthnet.synth import SynthConfig, synthesize

    cfg = resolve(SynthConfig, args.config, {
        "products": args.product or None, "tiles": args.tiles, "size_px": args.size_px,
        "format": args.format, "seed": args.seed,
    })
    summary = synthesize(cfg, Path(args.out_dir))
    names = [p["name"] if isinstance(p, dict) else p for p in summary.get("products", [])]
    print(f"synthetic world with {len(names)} product(s) in {args.out_dir}")
    for n in names:
        print(f"  {n}")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from bigearthnet.config import BuildConfig, resolve
    from bigearthnet.spark.build import run_build

    overrides = {"products": args.products, "clc": args.clc, "out": args.out,
                 "on_error": args.on_error, "overwrite": True if args.overwrite else None,
                 "append": True if args.append else None,
                 "delta": True if args.delta else None,
                 "label_rule": args.label_rule, "label_engine": args.label_engine,
                 "split": args.split,
                 "exclude_lists": args.exclude_lists, "official_splits": args.splits_dir}
    if args.master:
        overrides["spark"] = {"master": args.master}
    cfg = resolve(BuildConfig, args.config, overrides)
    manifest = run_build(cfg)
    counts = manifest["counts"]
    shown = cfg.out if cfg.out.startswith("s3://") else Path(cfg.out).resolve()
    if manifest.get("unchanged"):
        print(f"nothing to append: all {counts['products_skipped_existing']} product(s) are in "
              f"{shown} already; the dataset is unchanged")
        return 0
    print(f"dataset written to {shown}")
    print("  " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    if manifest["failures"]:
        print(f"  {len(manifest['failures'])} product(s) failed and were skipped; see manifest.json")
    return 0


def _job_config(model: type, args: argparse.Namespace, overrides: dict):
    """A Spark job's config: defaults, ``--config`` YAML, the options, ``--master``."""
    from bigearthnet.config import resolve

    if args.master:
        overrides["spark"] = {"master": args.master}
    return resolve(model, args.config, overrides)


def _print_dataset(out: str, manifest: dict) -> None:
    print(f"dataset written to {Path(out).resolve()}")
    print("  " + ", ".join(f"{k}={v}" for k, v in manifest["counts"].items()))


def _import_keys(args: argparse.Namespace) -> dict:
    """The command-line keys the import commands share."""
    return {"archive": args.archive_dir, "out": args.out, "on_error": args.on_error,
            "overwrite": True if args.overwrite else None}


def _imported(out: str, manifest: dict) -> int:
    """Report an import: the dataset, and how many broken patches were skipped."""
    _print_dataset(out, manifest)
    if manifest["failures"]:
        print(f"  {len(manifest['failures'])} broken patch(es) skipped; all named in manifest.json")
    return 0


def _cmd_import_v1(args: argparse.Namespace) -> int:
    from bigearthnet.config import ImportConfig
    from bigearthnet.spark.import_v1 import run_import

    cfg = _job_config(ImportConfig, args, _import_keys(args) | {
        "splits_dir": args.splits_dir, "exclude_lists": args.exclude_lists})
    return _imported(cfg.out, run_import(cfg))


def _cmd_import_v2(args: argparse.Namespace) -> int:
    from bigearthnet.config import ImportV2Config
    from bigearthnet.spark.import_v2 import run_import_v2

    cfg = _job_config(ImportV2Config, args, _import_keys(args))
    return _imported(cfg.out, run_import_v2(cfg))


def _cmd_export(args: argparse.Namespace) -> int:
    from bigearthnet.config import ExportConfig
    from bigearthnet.spark.export import run_export

    cfg = _job_config(ExportConfig, args, {
        "dataset": args.dataset, "format": args.format, "out": args.out,
        "overwrite": True if args.overwrite else None})
    doc = run_export(cfg)
    print(f"{doc['counts']['patches']} patches exported to {Path(cfg.out).resolve()} "
          f"({cfg.format} layout); read it with {doc['reader']}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from bigearthnet.config import resolve
    from bigearthnet.pipeline import train_model
    from bigearthnet.train.config import TrainConfig

    cfg = resolve(TrainConfig, args.config, {
        "dataset": args.dataset, "model": args.model, "out": args.out, "epochs": args.epochs,
        "nproc": args.nproc, "spark": True if args.spark else None,
        "resume": True if args.resume else None, "weights": args.weights,
        "label_set": args.label_set, "batch_size": args.batch_size, "device": args.device,
        "overwrite": True if args.overwrite else None,
        "tracking": {"mlflow": True} if args.mlflow else None,
    })
    result = train_model(cfg)
    print(f"run written to {result['run_dir']}: best epoch {result['best_epoch']}, "
          f"validation sample-F1 {result['best_val_f1']:.4f} (weights: {result['weights_source']})")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from bigearthnet.report.evaluation import evaluate_run

    metrics = evaluate_run(args.run, split=args.split, mlflow=True if args.mlflow else None)
    s = metrics["samples"]
    print(f"{args.split}: sample P {s['precision']:.4f} R {s['recall']:.4f} F1 {s['f1']:.4f} "
          f"F2 {s['f2']:.4f}; written to {metrics.get('eval_dir', Path(args.run) / 'eval')}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from bigearthnet.report.markdown import report_from_runs

    path = report_from_runs(args.workdir, args.runs, split=args.split)
    print(f"report written to {path}")
    return 0


def _cmd_discover(args: argparse.Namespace) -> int:
    import json

    from bigearthnet.stages.discover import new_products

    print(json.dumps(new_products(args.products, args.dataset)))
    return 0


def _cmd_pack_env(args: argparse.Namespace) -> int:
    from bigearthnet.packenv import pack_env

    result = pack_env(args.out, prefix=args.prefix, without=args.without or (),
                      cpu_only=args.cpu_only, level=args.level, overwrite=args.overwrite)
    print(f"environment packed: {result.summary()}")
    print(f"  spark-submit --archives {result.path}#environment "
          "--conf spark.pyspark.python=./environment/bin/python ...")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from bigearthnet.config import resolve
    from bigearthnet.pipeline import RunConfig, run

    overrides = {"workdir": args.workdir, "seed": args.seed,
                 "tracking": {"mlflow": True} if args.mlflow else None}
    if args.master:
        overrides["spark"] = {"master": args.master}
    report = run(resolve(RunConfig, args.config, overrides))
    print(f"report written to {report}")
    return 0


INTERRUPTED = {
    "synth": "the world folder may be incomplete; run synth again",
    "build": "no dataset was committed (the next build of this output removes the staging folder)",
    "import-v1": "no dataset was committed (the next import of this output removes the staging folder)",
    "import-v2": "no dataset was committed (the next import of this output removes the staging folder)",
    "export": "no export was committed (the next export to this folder removes the staging folder)",
    "train": "the run folder keeps the checkpoint of every finished epoch; continue with --resume",
    "evaluate": "no evaluation was committed; the run's previous eval folder, if any, is unchanged",
    "report": "no report was committed; the previous one, if any, is unchanged",
    "run": "finished steps stay in the work folder; run again to redo the rest",
    "pack-env": "no archive was written (a partial .tmp file is removed)",
    "discover": "nothing was written",
}
"""What an interrupted command leaves behind, by command."""


def _choices(model: type, key: str) -> list[str]:
    """The values of a config field declared as a ``Literal``."""
    return list(typing.get_args(model.model_fields[key].annotation))


def _add_on_error(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-error", choices=["fail", "skip"],
                   help="fail (default): stop at the first broken patch; skip: import the rest "
                        "and name every broken patch in manifest.json")


def _add_job_options(p: argparse.ArgumentParser, config_model: str) -> None:
    """``--config``, ``--master`` and ``--overwrite`` of a Spark job command."""
    p.add_argument("--config", help=f"YAML file with {config_model} keys")
    p.add_argument("--master", help="Spark master URL")
    p.add_argument("--overwrite", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI)."""
    from bigearthnet.config import BuildConfig

    parser = argparse.ArgumentParser(prog="bigearthnet", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a seeded synthetic Sentinel-2 L2A + CLC 2018 world")
    p.add_argument("out_dir")
    p.add_argument("--product", action="append", help="full L2A product name (repeatable)")
    p.add_argument("--tiles", type=int, help="draw N real products from reben_products.csv")
    p.add_argument("--size-px", type=int, help="tile side in 10 m pixels (multiple of 120, <= 10980)")
    p.add_argument("--format", choices=["jp2", "cog"], help="SAFE/JP2 (default) or COG + STAC")
    p.add_argument("--seed", type=int)
    p.add_argument("--config", help="YAML file with SynthConfig keys")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("build", help="cut L2A products into a Parquet patch dataset with Spark")
    p.add_argument("--products", help="folder of SAFE dirs/zips or STAC items")
    p.add_argument("--clc", help="CORINE Land Cover 2018 GeoPackage")
    p.add_argument("--out", help="dataset folder to create")
    p.add_argument("--config", help="YAML file with BuildConfig keys")
    p.add_argument("--master", help="Spark master URL (default: spark-submit's, else local[*])")
    p.add_argument("--on-error", choices=["fail", "skip"])
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.add_argument("--append", action="store_true",
                   help="add the products not yet in the dataset at --out (same config); "
                        "creates it when there is none yet")
    p.add_argument("--delta", action="store_true",
                   help="also commit patches/ and the metadata as Delta Lake tables (no copy)")
    p.add_argument("--label-rule", choices=_choices(BuildConfig, "label_rule"),
                   help="v1 (paper, default) or reben")
    p.add_argument("--label-engine", choices=_choices(BuildConfig, "label_engine"),
                   help="sedonadb (embedded, default) or sedona-spark (Apache Sedona on Spark)")
    p.add_argument("--split", choices=_choices(BuildConfig, "split"), help="default random 60/20/20")
    p.add_argument("--splits-dir", help="folder with the official train/val/test CSVs (--split official)")
    p.add_argument("--exclude-lists", nargs="+", metavar="CSV",
                   help="headerless CSVs of v1 names to drop (official snow / cloud lists)")
    p.set_defaults(func=_cmd_build)
    p = sub.add_parser("import-v1", help="convert a BigEarthNet-S2 v1.0 folder archive to Parquet")
    p.add_argument("archive_dir")
    p.add_argument("--out", required=True, help="dataset folder to create")
    _add_on_error(p)
    p.add_argument("--splits-dir", help="folder with the official train/val/test CSVs")
    p.add_argument("--exclude-lists", nargs="+", metavar="CSV",
                   help="official patches_with_seasonal_snow.csv / patches_with_cloud_and_shadow.csv")
    _add_job_options(p, "ImportConfig")
    p.set_defaults(func=_cmd_import_v1)
    p = sub.add_parser("import-v2", help="convert a reBEN (BigEarthNet v2.0) folder archive to Parquet")
    p.add_argument("archive_dir", help="folder with metadata.parquet, BigEarthNet-S2/, Reference_Maps/")
    p.add_argument("--out", required=True, help="dataset folder to create")
    _add_on_error(p)
    _add_job_options(p, "ImportV2Config")
    p.set_defaults(func=_cmd_import_v2)
    p = sub.add_parser("export", help="write a dataset in the reBEN or v1 folder layout (GeoTIFFs)")
    p.add_argument("dataset", help="dataset folder written by build / import-v1 / import-v2")
    p.add_argument("--format", required=True, choices=["reben", "v1"],
                   help="reben: BigEarthNet v2.0 (TorchGeo BigEarthNetV2); v1: BigEarthNet-S2 v1.0")
    p.add_argument("--out", required=True, help="folder to create")
    _add_job_options(p, "ExportConfig")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("train", help="train S-CNN-RGB, S-CNN-All or the Inception baseline")
    p.add_argument("--dataset", help="dataset folder written by build / import-v1")
    p.add_argument("--model", choices=list(MODEL_NAMES))
    p.add_argument("--out", help="run folder")
    p.add_argument("--config", help="YAML with TrainConfig keys (e.g. conf/paper.yaml)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--label-set", choices=["43", "19"])
    p.add_argument("--nproc", type=int, help="DDP processes (torchrun-style, or TorchDistributor tasks)")
    p.add_argument("--spark", action="store_true", help="run through TorchDistributor on the Spark master")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint")
    p.add_argument("--weights", help="Inception weights: 'imagenet' (local torch cache) or a file")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--mlflow", action="store_true",
                   help="track the run in MLflow (tracking.mlflow; see bigearthnet.train.tracking)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="score a run on a split; writes RUN/eval/")
    p.add_argument("--run", required=True)
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--mlflow", action="store_true",
                   help="log to the run's MLflow run (default: when it was trained with --mlflow)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("report", help="the Table-4 report of evaluated runs; writes W/report/")
    p.add_argument("runs", nargs="+", metavar="RUN", help="evaluated run folders (one per model)")
    p.add_argument("--workdir", required=True, help="the report goes to WORKDIR/report")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("discover", help="which products under --products are not in --dataset "
                                        "yet (one JSON object; the Airflow DAG's first task)")
    p.add_argument("--products", required=True, help="folder or s3:// prefix of products")
    p.add_argument("--dataset", required=True, help="dataset folder (need not exist yet)")
    p.set_defaults(func=_cmd_discover)

    p = sub.add_parser("pack-env", help="pack this venv for spark-submit --archives (see README)")
    p.add_argument("out", help="archive to write, .tar.gz or .tgz")
    p.add_argument("--without", nargs="+", metavar="DIST",
                   help="leave out these distributions and all that need them (e.g. torch: "
                        "a build-only archive)")
    p.add_argument("--cpu-only", action="store_true",
                   help="keep torch but leave out triton and the CUDA libraries torch does not "
                        "link at import (CPU executors only)")
    p.add_argument("--level", type=int, default=1, help="gzip level, 0 (none, fastest) to 9")
    p.add_argument("--prefix", help="venv to pack (default: the running one)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_pack_env)

    p = sub.add_parser("run", help="the main job: synth, build, train the 3 models, evaluate, report")
    p.add_argument("--workdir", help="work folder (default: demo)")
    p.add_argument("--config", help="YAML with RunConfig keys")
    p.add_argument("--seed", type=int)
    p.add_argument("--master", help="Spark master URL")
    p.add_argument("--mlflow", action="store_true", help="track each model's run in MLflow")
    p.set_defaults(func=_cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bigearthnet`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    warnings.simplefilter("always", UserWarning)
    try:
        return args.func(args)
    except BigEarthNetError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"interrupted; {INTERRUPTED[args.command]}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
