"""Digest the outputs of a fixed set of builds, to prove a refactor changes no output byte.

Usage::

    .venv/bin/python scripts/golden_outputs.py WORK_DIR DIGEST.json
    .venv/bin/python scripts/golden_outputs.py --compare BEFORE.json AFTER.json

The first form synthesises a fixed world (3 JP2 products, two of them one datatake, so v1 names
collide), then runs through the CLI: a tiling-only build, labelled builds under both label
rules and all three split kinds (with an exclusion list, without reference maps), and
``import-v1`` of the real example patches of ``bigearthnet-common`` with the official splits
and lists. It writes the SHA-256 of every output file. ``manifest.json`` is hashed after
removing what legitimately changes between runs (timings, package versions, per-task CPU and
memory figures). Use the same WORK_DIR for both runs: configs record absolute paths.

The second form prints every difference and exits with 1 if there is any.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tarfile
from importlib import resources
from pathlib import Path

PRODUCTS = [
    "S2A_MSIL2A_20170617T113321_N0205_R080_T29UPU_20170617T113319",
    "S2A_MSIL2A_20170717T113321_N0205_R080_T29UPV_20170717T113319",
    "S2A_MSIL2A_20170717T113321_N0205_R080_T29UPA_20170717T113319",
]
VOLATILE_PRODUCT_KEYS = ("cpu_s", "cpu_sys_s", "wall_s", "label_s", "peak_rss_mb")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest_digest(path: Path) -> str:
    doc = json.loads(path.read_text())
    doc.pop("timings_s", None)
    doc.pop("versions", None)
    for product in doc.get("products", []):
        for key in VOLATILE_PRODUCT_KEYS:
            product.pop(key, None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def digest_dataset(root: Path) -> dict[str, str]:
    """SHA-256 of every file of a dataset folder (manifest without its volatile keys)."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        out[rel] = _manifest_digest(path) if path.name == "manifest.json" else _sha(path)
    return out


def _cli(*args: str) -> None:
    from bigearthnet.cli import main

    code = main(list(args))
    if code != 0:
        raise SystemExit(f"bigearthnet {' '.join(args)} exited with {code}")


def run_all(work: Path) -> dict[str, dict[str, str]]:
    """Synthesise the world, run every build variant, digest each output."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    world = work / "world"
    _cli("synth", str(world), *[a for p in PRODUCTS for a in ("--product", p)],
         "--size-px", "480", "--seed", "11")
    products, clc = str(world / "products"), str(world / "clc" / "clc2018.gpkg")

    # A custom exclusion list and official split files over the world's v1 names.
    lists = work / "lists"
    lists.mkdir()
    names = [f"S2A_MSIL2A_20170617T113321_{c}_{r}" for r in range(4) for c in range(4)]
    (lists / "patches_with_cloud_and_shadow.csv").write_text("\n".join(names[:3]) + "\n")
    (lists / "train.csv").write_text("\n".join(names[3:10]) + "\n")
    (lists / "val.csv").write_text("\n".join(names[10:13]) + "\n")
    (lists / "test.csv").write_text("\n".join(names[13:]) + "\n")
    (work / "no_maps.yaml").write_text("reference_maps: false\nstrip_rows: 3\n")

    out = work / "out"
    runs = {
        "tiling": ["build", "--products", products, "--out", str(out / "tiling")],
        "v1_random": ["build", "--products", products, "--clc", clc, "--out", str(out / "v1_random"),
                      "--exclude-lists", str(lists / "patches_with_cloud_and_shadow.csv")],
        "v1_official": ["build", "--products", products, "--clc", clc, "--out",
                        str(out / "v1_official"), "--split", "official", "--splits-dir", str(lists)],
        "v1_no_maps": ["build", "--products", products, "--clc", clc, "--out",
                       str(out / "v1_no_maps"), "--config", str(work / "no_maps.yaml")],
        "reben_reben": ["build", "--products", products, "--clc", clc, "--out",
                        str(out / "reben_reben"), "--label-rule", "reben", "--split", "reben"],
    }
    common = resources.files("bigearthnet_common")
    archive = work / "v1"
    with tarfile.open(str(common.joinpath("BigEarthNet-S2-Example.tar.bz2"))) as tar:
        tar.extractall(archive, filter="data")
    splits = work / "official"
    splits.mkdir()
    for stem in ("train", "val", "test"):
        (splits / f"{stem}.csv.bz2").write_bytes(common.joinpath(f"{stem}.csv.bz2").read_bytes())
    snow = work / "patches_with_seasonal_snow.csv"
    example = sorted(p.name for p in (archive / "BigEarthNet-S2-Example").iterdir() if p.is_dir())
    snow.write_text(example[0] + "\n")
    runs["import_v1"] = ["import-v1", str(archive / "BigEarthNet-S2-Example"), "--out",
                         str(out / "import_v1"), "--splits-dir", str(splits),
                         "--exclude-lists", str(snow)]
    runs["import_v1_random"] = ["import-v1", str(archive / "BigEarthNet-S2-Example"), "--out",
                                str(out / "import_v1_random")]
    digests = {}
    for key, args in runs.items():
        _cli(*args)
        digests[key] = digest_dataset(out / key)
    return digests


def compare(before: dict, after: dict) -> list[str]:
    """Every difference between two digest documents."""
    problems = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key, {}), after.get(key, {})
        for rel in sorted(set(a) | set(b)):
            if a.get(rel) != b.get(rel):
                problems.append(f"{key}/{rel}: {a.get(rel)} != {b.get(rel)}")
    return problems


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--compare":
        before, after = (json.loads(Path(p).read_text()) for p in argv[1:3])
        problems = compare(before, after)
        for line in problems:
            print(line)
        n = sum(len(v) for v in before.values())
        print(f"{len(problems)} difference(s) over {n} files")
        return 1 if problems else 0
    work, dest = Path(argv[0]), Path(argv[1])
    digests = run_all(work)
    dest.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    print(f"{sum(len(v) for v in digests.values())} files digested into {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
