"""Object storage without Spark: URIs, discovery of every product layout on S3, the CLC read
in place, named errors for bad credentials and missing buckets, and the output checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bigearthnet.errors import (
    BucketNotFoundError,
    IncompleteDatasetError,
    InputNotFoundError,
    ObjectStoreAccessError,
    OutputExistsError,
    UnsupportedStorageError,
)
from bigearthnet.storage import S3Settings, S3Uri, gdal_path
from s3.conftest import upload_tree


def test_uris_and_settings():
    uri = S3Uri.parse("s3://bucket/a/b/")
    assert (uri.bucket, uri.key, str(uri)) == ("bucket", "a/b", "s3://bucket/a/b")
    assert uri.join("_runs", "x/").gdal == "/vsis3/bucket/a/b/_runs/x"
    assert gdal_path("s3://b/k.gpkg") == "/vsis3/b/k.gpkg" and gdal_path("/x/y") == "/x/y"
    s = S3Settings.from_env({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "k",
                             "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "eu-west-1"})
    conf = s.gdal_config()
    assert conf["AWS_S3_ENDPOINT"] == "127.0.0.1:9000" and conf["AWS_HTTPS"] == "NO"
    assert conf["AWS_VIRTUAL_HOSTING"] == "FALSE" and conf["AWS_REGION"] == "eu-west-1"
    assert "s" not in repr(s).split("secret")[0][-3:]  # credentials are not in the repr
    assert "AWS_S3_ENDPOINT" not in S3Settings.from_env({}).gdal_config()  # AWS itself


@pytest.mark.parametrize("world", ["world_jp2", "world_zip", "world_cog"])
def test_discovery_and_reads_on_s3_match_local(world, s3_env, request):
    """SAFE folders, SAFE zips and STAC items with COGs: the same products and the same pixels
    through /vsis3/ as from disk."""
    from bigearthnet.sentinel2.products import discover_products
    from bigearthnet.sentinel2.reader import OpenProduct

    local = request.getfixturevalue(world)
    uri = upload_tree(s3_env, local / "products", f"inputs/{world}")
    remote, failures = discover_products(uri)
    here, _ = discover_products(local / "products")
    assert not failures
    assert [s.product_id for s in remote] == [s.product_id for s in here] and len(remote) == 2
    for r, h in zip(remote, here, strict=True):
        assert r.kind == h.kind and r.path.startswith("s3://")
        assert all(p.startswith(("/vsis3/", "/vsizip//vsis3/")) for p in r.layers.values())
        with OpenProduct(r) as a, OpenProduct(h) as b:
            assert (a.epsg, a.grid) == (b.epsg, b.grid)
            sa, sb = next(a.strips(1)), next(b.strips(1))
            for band in ("B02", "B11", "B01"):
                np.testing.assert_array_equal(sa.bands[band], sb.bands[band])
            np.testing.assert_array_equal(sa.scl, sb.scl)


def test_clc_is_read_in_place_from_s3(world_jp2, s3_env):
    from bigearthnet.clc.reader import read_clc_bbox
    from bigearthnet.errors import ClcReadError

    gpkg = world_jp2 / "clc" / "clc2018.gpkg"
    uri = upload_tree(s3_env, gpkg.parent, "inputs/clc") + "/clc2018.gpkg"
    bounds = (600000.0, 5897640.0, 602400.0, 5900040.0)  # T29UPU, 2 x 2 patches
    codes, geoms, stats = read_clc_bbox(uri, bounds, "EPSG:32629")
    codes0, geoms0, stats0 = read_clc_bbox(gpkg, bounds, "EPSG:32629")
    assert stats == stats0 and stats["kept"] > 0
    np.testing.assert_array_equal(codes, codes0)
    assert all(a.equals_exact(b, 0) for a, b in zip(geoms, geoms0, strict=True))
    with pytest.raises(InputNotFoundError, match="inputs/clc/missing.gpkg"):
        read_clc_bbox(uri.replace("clc2018", "missing"), bounds, "EPSG:32629")
    assert ClcReadError  # the unreadable case is covered locally (tests/clc)


def test_bad_credentials_and_missing_bucket_are_named_errors(world_jp2, s3_env, monkeypatch):
    from bigearthnet.config import BuildConfig
    from bigearthnet.dataset.loader import split_dir
    from bigearthnet.sentinel2.products import discover_products
    from bigearthnet.spark.build import run_build

    uri = upload_tree(s3_env, world_jp2 / "products", "inputs/creds")
    missing = f"s3://no-such-bucket-{s3_env.bucket}/ds"
    with pytest.raises(BucketNotFoundError, match=f"{missing}.*does not exist"):
        run_build(BuildConfig(products=uri, out=missing))
    with pytest.raises(BucketNotFoundError, match=missing):
        discover_products(missing)
    with pytest.raises(BucketNotFoundError, match=missing):
        split_dir(missing, "train")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(ObjectStoreAccessError, match=f"{uri}.*AWS_SECRET_ACCESS_KEY"):
        discover_products(uri)
    with pytest.raises(ObjectStoreAccessError, match=f"s3://{s3_env.bucket}/ds"):
        run_build(BuildConfig(products=str(world_jp2 / "products"),
                              out=f"s3://{s3_env.bucket}/ds"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ObjectStoreAccessError, match="cannot be reached"):
        discover_products(uri)


def test_a_task_refused_by_the_store_gets_a_named_error(world_jp2, s3_env):
    """GDAL's /vsis3/ failure is the store's, not a corrupt file's."""
    from bigearthnet.sentinel2.products import discover_products
    from bigearthnet.sentinel2.reader import OpenProduct

    uri = upload_tree(s3_env, world_jp2 / "products", "inputs/task-creds")
    sources, _ = discover_products(uri)
    settings = S3Settings.from_env()
    wrong = S3Settings(settings.endpoint_url, settings.region, settings.access_key, "wrong")
    wrong.apply()  # what a task applies from its closure
    with pytest.raises(ObjectStoreAccessError,
                       match=f"product {sources[0].product_id}: .*/vsis3/{s3_env.bucket}/"):
        OpenProduct(sources[0])
    S3Settings(settings.endpoint_url.replace(settings.endpoint_url.rsplit(":", 1)[1], "9"),
               settings.region, settings.access_key, settings.secret_key).apply()
    with pytest.raises(ObjectStoreAccessError, match="cannot be reached"):
        OpenProduct(sources[1])


def test_output_checks(world_jp2, s3_env):
    from bigearthnet.config import BuildConfig
    from bigearthnet.spark.build import run_build
    from bigearthnet.storage import ObjectStore

    store = ObjectStore()
    products, clc = str(world_jp2 / "products"), str(world_jp2 / "clc" / "clc2018.gpkg")
    base = S3Uri(s3_env.bucket, "checks")
    store.write_bytes(base.join("foreign", "x.txt"), b"not ours")
    with pytest.raises(OutputExistsError, match="holds objects that no build wrote"):
        run_build(BuildConfig(products=products, out=str(base.join("foreign"))))
    store.write_bytes(base.join("done", "_SUCCESS"), b'{"run_id": "r"}')
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_build(BuildConfig(products=products, out=str(base.join("done"))))
    with pytest.raises(UnsupportedStorageError, match="bucket root"):
        run_build(BuildConfig(products=products, out=f"s3://{s3_env.bucket}"))
    with pytest.raises(UnsupportedStorageError, match="sedonadb"):
        run_build(BuildConfig(products=products, clc=clc, out=str(base.join("sedona")),
                              label_engine="sedona-spark"))
    with pytest.raises(UnsupportedStorageError, match="--append"):
        run_build(BuildConfig(products=products, out=str(base.join("append")), append=True))
    with pytest.raises(IncompleteDatasetError, match=f"{base.join('nothing')} has no _SUCCESS"):
        from bigearthnet.dataset.objectstore import local_dataset

        local_dataset(str(base.join("nothing")))


def test_settings_without_s3_support_refuse_uris():
    """A job that cannot write to S3 says so instead of making a local folder named 's3:'."""
    from bigearthnet.config import BuildConfig, ImportConfig, resolve
    from bigearthnet.errors import ConfigError
    from bigearthnet.train.config import TrainConfig

    with pytest.raises(ConfigError, match="out 's3://b/ds': this setting takes a local"):
        resolve(ImportConfig, None, {"archive": "v1", "out": "s3://b/ds"})
    with pytest.raises(ConfigError, match="official_splits"):
        resolve(BuildConfig, None, {"products": "p", "out": "o", "official_splits": "s3://b/s"})
    with pytest.raises(ConfigError, match="out 's3://b/run'"):
        resolve(TrainConfig, None, {"dataset": "s3://b/ds", "out": "s3://b/run",
                                    "model": "s-cnn-rgb"})
    assert resolve(TrainConfig, None, {"dataset": "s3://b/ds", "out": "run",
                                       "model": "s-cnn-rgb"}).dataset == "s3://b/ds"


def test_a_task_that_outlives_an_aborted_run_removes_its_uploads(s3_env):
    """A cancelled Spark job's Python task runs its function to the end: what it uploads after
    the driver removed the run prefix must not stay. The driver's abort marker is written before
    that removal, and the task checks it after its uploads."""
    from bigearthnet.dataset.layout import DatasetLayout
    from bigearthnet.dataset.objectstore import (
        RUNS,
        S3FailureBoard,
        TaskStorage,
        abort_marker,
        remove_other_runs,
    )
    from bigearthnet.storage import ObjectStore

    store = ObjectStore()
    out = S3Uri(s3_env.bucket, "aborted")
    run_root = out.join(RUNS, "run-a")
    storage = TaskStorage(S3Settings.from_env(), run_root)

    def build(folder, abort_midway: bool):
        (DatasetLayout(folder).patches / "one.parquet").write_bytes(b"x" * 100)
        if abort_midway:  # the driver aborts while this task still runs
            store.write_bytes(abort_marker(run_root), b"")
            store.delete_prefix(run_root)
        return {"task_id": 0, "product_id": "P", "status": "ok"}

    row = storage.run(lambda folder: build(folder, abort_midway=False), Path("unused"))
    assert row["status"] == "ok" and list(store.list(run_root)) == ["patches/one.parquet"]
    row = storage.run(lambda folder: build(folder, abort_midway=True), Path("unused"))
    assert row["status"] == "failed" and "aborted" in row["error_message"]
    assert store.list(run_root) == {}
    board = S3FailureBoard(storage.settings, run_root)
    board.report(0, {"task_id": 0, "status": "ok"})
    board.report(1, {"task_id": 1, "status": "failed", "error_message": "late"})
    assert store.list(run_root) == {}
    assert set(store.list(out)) == {"_runs/run-a.aborted"}
    # The next committed build removes the marker with the other runs.
    store.write_bytes(out.join(RUNS, "run-b", "x"), b"")
    store.write_bytes(out.join(RUNS, "run-c", "y"), b"")
    assert remove_other_runs(store, out, keep="run-b") == ["run-c"]
    assert set(store.list(out)) == {"_runs/run-b/x"}
