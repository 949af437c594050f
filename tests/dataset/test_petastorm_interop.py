"""Interop: Petastorm's ``make_batch_reader`` reads a real ``bigearthnet build`` output, byte for
byte.

Petastorm 0.13.1 needs pyarrow <= 14 and numpy < 2 (it imports ``pyarrow.filesystem``), which
cannot live in our environment, so the test builds a separate venv once (cached outside the
repo; ``BIGEARTHNET_INTEROP_CACHE`` overrides the folder, default ``~/.cache/bigearthnet``)
and runs the reader there in a subprocess. Petastorm is installed with ``--no-deps``: its
declared ``pyspark`` dependency is not needed by ``make_batch_reader`` and is a 300 MB download.

Findings (recorded here because they constrain the dataset format):
- it reads the hive-partitioned ``patches/`` folder whole and yields the ``split`` partition
  as a string column;
- tensor columns come back as Python ``bytes`` per row, identical to ours;
- variable-length list columns (``labels_43``, ``labels_19``, ``clc_codes``,
  ``clc_area_fractions``) cannot be read by ``make_batch_reader`` ("Length of all values in
  column ... are expected to be the same length"); Petastorm users read the fixed-size
  ``multi_hot_*`` tensors instead.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import petastorm_env

from bigearthnet.dataset.schema import labeled_schema

pytestmark = pytest.mark.interop

SCALARS = ["tile_id", "col", "row", "epsg", "has_nodata"]

READER = r"""
import hashlib, json, sys
from petastorm import make_batch_reader
url, tensors, scalars = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
out = {}
with make_batch_reader(url, schema_fields=["patch_id", "split", *tensors, *scalars], num_epochs=1,
                       workers_count=1, shuffle_row_groups=False) as reader:
    for batch in reader:
        d = batch._asdict()
        for i, pid in enumerate(d["patch_id"]):
            row = {"split": str(d["split"][i])}
            row.update({c: hashlib.sha256(bytes(d[c][i])).hexdigest() for c in tensors})
            row.update({c: d[c][i].item() if hasattr(d[c][i], "item") else str(d[c][i]) for c in scalars})
            if str(pid) in out:
                raise SystemExit(f"duplicate row {pid}")
            out[str(pid)] = row
import petastorm, pyarrow, numpy
print(json.dumps({"versions": {"petastorm": petastorm.__version__, "pyarrow": pyarrow.__version__,
                               "numpy": numpy.__version__}, "rows": out}))
"""


@pytest.fixture(scope="session")
def petastorm_python() -> Path:
    """The interpreter of the cached venv holding Petastorm 0.13.1 (built on first use)."""
    try:
        return petastorm_env.petastorm_python()
    except petastorm_env.PetastormUnavailable as exc:
        pytest.skip(f"cannot build the Petastorm venv: {exc}")


def test_petastorm_reads_our_dataset(petastorm_python: Path, labeled_jp2: Path) -> None:
    built = labeled_jp2
    tensors = [c.name for c in labeled_schema(True).tensors]
    proc = subprocess.run(
        [str(petastorm_python), "-c", READER, f"file://{built / 'patches'}", ",".join(tensors),
         ",".join(SCALARS)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["versions"] == {"petastorm": "0.13.1", "pyarrow": "14.0.2", "numpy": "1.26.4"}
    theirs = doc["rows"]

    # Ours, read straight from the files with pyarrow (no code of ours in the way).
    ours: dict[str, dict] = {}
    for split_dir in sorted((built / "patches").glob("split=*")):
        split = split_dir.name.removeprefix("split=")
        for f in sorted(split_dir.glob("*.parquet")):
            for row in pq.read_table(f, columns=["patch_id", *tensors, *SCALARS]).to_pylist():
                rec = {"split": split}
                rec.update({c: hashlib.sha256(row[c]).hexdigest() for c in tensors})
                rec.update({c: row[c] for c in SCALARS})
                ours[row["patch_id"]] = rec
    manifest = json.loads((built / "manifest.json").read_text())
    assert len(ours) == manifest["counts"]["patches_kept"] > 0
    assert len({r["split"] for r in ours.values()}) >= 2  # several hive partitions
    assert sorted(theirs) == sorted(ours)
    mismatched = [pid for pid in ours if theirs[pid] != ours[pid]]
    assert not mismatched, (mismatched[:3], theirs[mismatched[0]], ours[mismatched[0]])
