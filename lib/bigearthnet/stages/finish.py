"""Stage *write*, driver side: merge the tasks' parts, exact statistics and the manifest.

Runs once on the driver after every task returned its summary row; reads only small files
(metadata parts) and the summaries' histograms, never pixels.
"""

from __future__ import annotations

import json
import platform
import shutil
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bigearthnet import __version__
from bigearthnet.clc.nomenclature import class_orders
from bigearthnet.config import BuildConfig
from bigearthnet.constants import SPLITS
from bigearthnet.dataset.io import write_json
from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.dataset.schema import (
    HISTOGRAM_SCHEMA,
    METADATA_SCHEMA,
    PATCH_SCHEMA,
    PatchSchema,
    band_order,
    labeled_schema,
)
from bigearthnet.dataset.stats import BandHistograms
from bigearthnet.errors import BigEarthNetError, BuildFailedError
from bigearthnet.quality import DROP_REASONS
from bigearthnet.sentinel2.naming import parse_product_name
from bigearthnet.sentinel2.products import DiscoveryFailure, ProductSource
from bigearthnet.stages.split import NOT_IN_SPLIT

FORMAT = "bigearthnet-patches"
"""The ``format`` field of every manifest."""


def package_versions() -> dict[str, str]:
    """Versions of the components that shape the output."""
    import numpy
    import pyarrow
    import pyspark
    import rasterio
    import shapely

    return {
        "bigearthnet": __version__, "python": platform.python_version(),
        "numpy": numpy.__version__, "pyarrow": pyarrow.__version__,
        "pyspark": pyspark.__version__, "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__, "shapely": shapely.__version__,
    }


def check_duplicate_patch_ids(sources: list[ProductSource]) -> None:
    """Two products of one datatake, orbit and tile (e.g. reprocessed baselines) would give
    identical v2 patch ids; refuse them before any work."""
    seen: dict[tuple, str] = {}
    for src in sources:
        n = parse_product_name(src.product_id)
        key = (n.mission, n.datatake, n.orbit, n.tile)
        if key in seen:
            raise BigEarthNetError(
                f"products {seen[key]} and {src.product_id} cover the same datatake and tile "
                "and would produce identical patch ids; keep one of them"
            )
        seen[key] = src.product_id


def v1_collisions(summaries: list[dict]) -> dict:
    """Count v1 names shared by several tiles of one datatake (v1 names lack the tile id)."""
    by_datatake: dict[str, list[dict]] = defaultdict(list)
    for s in summaries:
        n = parse_product_name(s["product_id"])
        by_datatake[f"{n.mission}_MSIL2A_{n.datatake}"].append(s)
    names = patches = 0
    groups = []
    for key, members in sorted(by_datatake.items()):
        if len(members) < 2:
            continue
        cover: dict[tuple[int, int], int] = defaultdict(int)
        for s in members:
            for r in range(s["n_rows"]):
                for c in range(s["n_cols"]):
                    cover[(c, r)] += 1
        shared = [k for k, v in cover.items() if v > 1]
        if shared:
            names += len(shared)
            patches += sum(cover[k] for k in shared)
            groups.append({"datatake": key, "tiles": sorted(parse_product_name(s["product_id"]).tile
                                                           for s in members),
                           "names": len(shared)})
    return {"names": names, "patches": patches, "groups": groups}


def seal_staging(staging: Path, manifest: dict, config_file: Path, config_json: str) -> None:
    """The last writes before a staging folder is committed.

    Removes the tasks' parts (merged by now) and the files of task attempts that never finished
    (lost executors), then writes the manifest and the job's resolved config.
    """
    layout = DatasetLayout(staging)
    shutil.rmtree(layout.parts, ignore_errors=True)
    for stray in layout.stray_files():
        stray.unlink(missing_ok=True)
    write_json(layout.manifest, manifest)
    config_file.write_text(config_json + "\n")


def write_histograms(path: Path, summaries: list[dict]) -> None:
    """Write ``histograms.parquet``: each product's train histograms, in product id order."""
    rows = sorted((s["product_id"], s["histograms"]) for s in summaries if s["histograms"])
    table = pa.table({"product_id": [r[0] for r in rows], "histograms": [r[1] for r in rows]},
                     schema=HISTOGRAM_SCHEMA)
    pq.write_table(table, path, compression="zstd")


def make_manifest(cfg: BuildConfig, ok: list[dict], failed: list[dict],
                  discovery_failures: list[DiscoveryFailure], timings: dict) -> dict:
    """The manifest of a build: schema, config, versions, counts, products, failures."""
    collisions = v1_collisions(ok)
    failures = [
        {"path": f.path, "error_type": f.error_type, "message": f.message} for f in discovery_failures
    ] + [
        {"product_id": s["product_id"], "error_type": s["error_type"], "message": s["error_message"]}
        for s in failed
    ]
    return {
        "format": FORMAT,
        "label_engine": cfg.label_engine if cfg.clc is not None else None,
        "schema": PATCH_SCHEMA.to_json(),
        "band_order": band_order(),
        "config": json.loads(cfg.model_dump_json()),
        "versions": package_versions(),
        "counts": {
            "products": len(ok),
            "products_failed": len(failures),
            "patches_cut": sum(s["n_patches"] for s in ok),
            "patches_with_nodata": sum(s["n_nodata"] for s in ok),
            "v1_name_collisions": collisions["names"],
        },
        "v1_name_collisions": collisions,
        "products": [
            {k: (json.loads(s[k]) if k in ("files", "counts", "clc") and s[k] else s[k])
             for k in ("product_id", "n_patches", "n_nodata", "n_cols", "n_rows", "epsg",
                       "files", "counts", "clc", "cpu_s", "cpu_sys_s", "wall_s", "label_s",
                       "peak_rss_mb")}
            for s in sorted(ok, key=lambda s: s["product_id"])
        ],
        "failures": failures,
        "timings_s": timings,
    }


def finish_labeled(staging: Path, ok: list[dict], manifest: dict,
                   schema: PatchSchema | None = None) -> None:
    """Merge the tasks' metadata parts and train histograms; add label counts to the manifest.

    Args:
        staging: the staging dataset folder.
        ok: the summaries of the tasks that succeeded.
        manifest: from :func:`make_manifest`; completed in place.
        schema: the patch table schema (default: the labeled build's).

    Raises:
        BuildFailedError: the counts do not add up (a bug).
    """
    layout = DatasetLayout(staging)
    parts = sorted(layout.metadata_parts.glob("*.parquet"))
    meta = pa.concat_tables([pq.read_table(p) for p in parts]) if parts else METADATA_SCHEMA.empty_table()
    meta = meta.sort_by("patch_id")
    pq.write_table(meta, layout.metadata)

    write_histograms(layout.histograms, ok)
    hist = BandHistograms()
    for s in ok:
        if s["histograms"]:
            hist.merge(BandHistograms.from_bytes(s["histograms"]))
    n_train = sum(json.loads(s["counts"]).get("kept_train", 0) for s in ok)
    write_json(layout.stats, {
        "split": "train", "n_patches": n_train,
        "note": "per-band statistics of uint16 values at native resolution over the train split; "
                "percentiles use the inverted-CDF definition",
        "bands": hist.summary(),
    })

    counts = manifest["counts"]
    task_counts: dict[str, int] = defaultdict(int)
    for s in ok:
        for k, v in json.loads(s["counts"]).items():
            task_counts[k] += v
    reasons = list(DROP_REASONS) + ([NOT_IN_SPLIT] if manifest["config"]["split"] == "official" else [])
    for r in reasons:
        counts[f"dropped_{r}"] = task_counts.get(f"dropped_{r}", 0)
    counts["patches_kept"] = meta.num_rows
    for split in SPLITS:
        counts[f"kept_{split}"] = task_counts.get(f"kept_{split}", 0)
    dropped = sum(counts[f"dropped_{r}"] for r in reasons)
    if counts["patches_cut"] != counts["patches_kept"] + dropped:
        raise BuildFailedError(
            f"internal count mismatch: cut {counts['patches_cut']} != kept {counts['patches_kept']}"
            f" + dropped {dropped}; please report this"
        )
    orders = class_orders()
    manifest["class_orders"] = orders
    manifest["band_order"] = band_order()
    manifest["drop_reason_order"] = reasons
    manifest["class_frequencies"] = {}
    manifest["label_cardinality"] = {}
    for key, column in (("labels_43", "labels_43"), ("labels_19", "labels")):
        freq: dict[str, int] = {name: 0 for name in orders[key]}
        card: dict[str, int] = defaultdict(int)
        for labels in meta[column].to_pylist():
            card[str(len(labels))] += 1
            for name in labels:
                freq[name] += 1
        manifest["class_frequencies"][key] = freq
        manifest["label_cardinality"][key] = dict(sorted(card.items(), key=lambda kv: int(kv[0])))
    clc: dict[str, int] = defaultdict(int)
    for s in ok:
        for k, v in json.loads(s["clc"] or "{}").items():
            clc[k] += v
    manifest["clc"] = dict(clc)
    counts["clc_invalid_repaired"] = clc.get("invalid_repaired", 0)
    manifest["schema"] = (schema or labeled_schema(manifest["config"]["reference_maps"])).to_json()
    manifest["timings_s"]["label_s"] = sum(s["label_s"] or 0.0 for s in ok)
    manifest["timings_s"]["tasks_cpu_s"] = sum(s["cpu_s"] for s in ok)
