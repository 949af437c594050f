"""The ONE definition of the patch table: names, Arrow types, tensor shapes and band order.

Writer (Spark tasks), readers (torch loader, Petastorm interop) and the manifest all derive from
``PATCH_SCHEMA``. Tensor columns hold fixed-shape, little-endian, C-order raw bytes; their dtype
and shape are declared here and stored as JSON in the Parquet key-value metadata (key
``bigearthnet.schema``) and in ``manifest.json``. Nothing is ever pickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from bigearthnet.constants import PATCH_SIZE_PX, patch_px
from bigearthnet.sentinel2.bands import BAND_BY_NAME, BAND_NAMES, GROUPS

SCHEMA_KEY = b"bigearthnet.schema"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Column:
    """A scalar (non-tensor) column."""

    name: str
    arrow_type: pa.DataType
    description: str
    nullable: bool = False

    def to_json(self) -> dict:
        """JSON description of the column."""
        return {"name": self.name, "kind": "scalar", "arrow_type": str(self.arrow_type),
                "nullable": self.nullable, "description": self.description}


@dataclass(frozen=True)
class TensorColumn:
    """A fixed-shape tensor stored as raw little-endian bytes in a binary column."""

    name: str
    dtype: str  # numpy dtype string, little-endian, e.g. "<u2"
    shape: tuple[int, ...]
    description: str
    bands: tuple[str, ...] = field(default=())
    nullable: bool = False

    @property
    def arrow_type(self) -> pa.DataType:
        """Arrow storage type (binary)."""
        return pa.binary()

    @property
    def nbytes(self) -> int:
        """Bytes per value."""
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict:
        """JSON description of the column."""
        return {"name": self.name, "kind": "tensor", "arrow_type": "binary", "dtype": self.dtype,
                "shape": list(self.shape), "bands": list(self.bands), "order": "C",
                "nullable": self.nullable, "description": self.description}

    def decode(self, array: pa.Array) -> np.ndarray:
        """Zero-copy view of a binary Arrow array as ``(n, *shape)``; no per-row Python.

        Raises:
            ValueError: if the values do not all have the declared size.
        """
        array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
        n = len(array)
        if n == 0:
            return np.empty((0, *self.shape), dtype=self.dtype)
        if array.null_count:
            raise ValueError(f"tensor column {self.name} holds nulls")
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int32, count=n + 1, offset=array.offset * 4)
        start = int(offsets[0])
        if int(offsets[-1]) - start != n * self.nbytes or not np.all(np.diff(offsets) == self.nbytes):
            raise ValueError(f"tensor column {self.name}: values are not {self.nbytes} bytes each")
        data = np.frombuffer(array.buffers()[2], dtype=np.uint8, count=n * self.nbytes, offset=start)
        return data.view(np.dtype(self.dtype)).reshape((n, *self.shape))


def encode_tensor(values: np.ndarray, column: TensorColumn) -> pa.Array:
    """Wrap a ``(n, *shape)`` array as a binary Arrow array without copying per row."""
    expected = np.dtype(column.dtype)
    if values.shape[1:] != column.shape:
        raise ValueError(f"{column.name}: shape {values.shape[1:]} != declared {column.shape}")
    data = np.ascontiguousarray(values, dtype=expected)
    n = data.shape[0]
    offsets = (np.arange(n + 1, dtype=np.int64) * column.nbytes)
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError(f"{column.name}: {n} values exceed 2 GiB in one batch; read smaller strips")
    return pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    )


def _group_column(resolution_m: int) -> TensorColumn:
    bands = GROUPS[resolution_m]
    px = patch_px(resolution_m)
    return TensorColumn(
        f"bands_{resolution_m}m", "<u2", (len(bands), px, px),
        f"{', '.join(bands)} at {resolution_m} m: uint16 BOA reflectance x 10000, 0 = no data",
        bands,
    )


BANDS_10M = _group_column(10)
BANDS_20M = _group_column(20)
BANDS_60M = _group_column(60)
SCL_COLUMN = TensorColumn("scl", "|u1", (60, 60), "Sen2Cor scene classification at 20 m", ("SCL",))

TILING_COLUMNS: tuple[Column | TensorColumn, ...] = (
    Column("patch_id", pa.string(), "reBEN/v2 name, unique: S2A_MSIL2A_<datatake>_N9999_<orbit>_<tile>_<col>_<row>"),
    Column("patch_id_v1", pa.string(), "BigEarthNet v1 name <mission>_MSIL2A_<datatake>_<col>_<row>; not unique across tiles"),
    Column("product_id", pa.string(), "source L2A product name"),
    Column("tile_id", pa.string(), "MGRS tile, e.g. T29UPU"),
    Column("sensing_time", pa.timestamp("us", tz="UTC"), "datatake sensing start (UTC)"),
    Column("col", pa.int16(), "patch column from the tile's west edge, from 0"),
    Column("row", pa.int16(), "patch row from the tile's north edge, from 0"),
    Column("epsg", pa.int32(), "EPSG code of the tile's UTM CRS"),
    Column("footprint", pa.binary(), "patch square as WKB in the tile CRS"),
    BANDS_10M,
    BANDS_20M,
    BANDS_60M,
    SCL_COLUMN,
    Column("has_nodata", pa.bool_(), "a band or SCL pixel of the patch is 0 (no data)"),
)


@dataclass(frozen=True)
class PatchSchema:
    """An ordered set of columns with Arrow/JSON views."""

    columns: tuple[Column | TensorColumn, ...]

    def __getitem__(self, name: str) -> Column | TensorColumn:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        """Column names in order."""
        return [c.name for c in self.columns]

    @property
    def tensors(self) -> list[TensorColumn]:
        """The tensor columns."""
        return [c for c in self.columns if isinstance(c, TensorColumn)]

    def to_json(self) -> dict:
        """The schema as a JSON-serialisable dict."""
        return {"version": SCHEMA_VERSION, "columns": [c.to_json() for c in self.columns]}

    def to_arrow(self) -> pa.Schema:
        """Arrow schema with the JSON schema in its key-value metadata."""
        fields = [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns]
        meta = {SCHEMA_KEY: json.dumps(self.to_json(), sort_keys=True).encode()}
        return pa.schema(fields, metadata=meta)


MULTI_HOT_43 = TensorColumn("multi_hot_43", "|u1", (43,), "43-class multi-hot, manifest class_orders.labels_43 order")
MULTI_HOT_19 = TensorColumn("multi_hot_19", "|u1", (19,), "19-class multi-hot, manifest class_orders.labels_19 order")
REFERENCE_MAP = TensorColumn("reference_map", "<u2", (PATCH_SIZE_PX, PATCH_SIZE_PX), "CLC 2018 code per 10 m pixel (pixel-centre rule), 0 = no CLC")

RULE_COLUMNS: tuple[Column | TensorColumn, ...] = (
    Column("labels_43", pa.list_(pa.string()), "CLC Level-3 class names (paper's 43 classes), official order"),
    Column("labels_19", pa.list_(pa.string()), "reBEN 19-class names, official order"),
    MULTI_HOT_43,
    MULTI_HOT_19,
    Column("clc_codes", pa.list_(pa.string()), "CLC codes present in the patch, ascending"),
    Column("clc_area_fractions", pa.list_(pa.float32()), "patch area fraction per clc_codes entry"),
    Column("unlabeled_fraction", pa.float32(), "fraction of pixels with no CLC or no 19-class equivalent"),
)
"""What a label rule decides per patch (see :data:`LABEL_SCHEMA`)."""

SCREEN_COLUMNS: tuple[Column | TensorColumn, ...] = (
    Column("cloud_fraction", pa.float32(), "SCL 8, 9, 10 fraction"),
    Column("shadow_fraction", pa.float32(), "SCL 3 fraction"),
    Column("snow_fraction", pa.float32(), "SCL 11 fraction"),
    Column("nodata_fraction", pa.float32(), "SCL 0 fraction"),
    Column("contains_seasonal_snow", pa.bool_(), "snow fraction above the flag threshold"),
    Column("contains_cloud_or_shadow", pa.bool_(), "cloud + shadow fraction above the flag threshold"),
)
"""What the screen stage measures per patch."""

LABEL_COLUMNS: tuple[Column | TensorColumn, ...] = RULE_COLUMNS + SCREEN_COLUMNS

PATCH_SCHEMA = PatchSchema(TILING_COLUMNS)
"""The tiling-only patch table (no CLC given)."""

LABELED_PATCH_SCHEMA = PatchSchema(TILING_COLUMNS + LABEL_COLUMNS)

_IMPORT_NULLABLE = {"scl", "clc_area_fractions", "unlabeled_fraction", "cloud_fraction",
                    "shadow_fraction", "snow_fraction", "nodata_fraction"}


def _nullable(col: Column | TensorColumn) -> Column | TensorColumn:
    if col.name not in _IMPORT_NULLABLE:
        return col
    if isinstance(col, TensorColumn):
        return TensorColumn(col.name, col.dtype, col.shape, col.description + " (null: not in the v1 archive)",
                            col.bands, nullable=True)
    return Column(col.name, col.arrow_type, col.description + " (null: not in the v1 archive)", nullable=True)


IMPORTED_PATCH_SCHEMA = PatchSchema(tuple(_nullable(c) for c in TILING_COLUMNS + LABEL_COLUMNS))
"""Patches imported from the BigEarthNet v1 folder archive: no SCL (so no SCL fractions) and no
CLC areas; flags come from the official snow/cloud lists."""


IMPORTED_V2_PATCH_SCHEMA = PatchSchema(IMPORTED_PATCH_SCHEMA.columns + (REFERENCE_MAP,))
"""Patches imported from the reBEN (v2.0) folder archive: the v1 import's columns plus the
reference maps (which also give ``clc_codes``, their pixel fractions and the unlabeled share)."""


def band_order() -> dict:
    """The band order, stated once: for manifests (``band_order``) and exports (``export.json``).

    ``bands`` is the channel order of the 12 bands everywhere they appear as one list: the
    reBEN and v1 band files sorted as TorchGeo sorts them (so its image channels), our
    ``BatchTransform`` "all" selection and the 20/60 m upsampling. ``columns`` is the order of
    the bands inside each stored tensor column.
    """
    return {
        "bands": list(BAND_NAMES),
        "resolution_m": {b: BAND_BY_NAME[b].resolution_m for b in BAND_NAMES},
        "columns": {f"bands_{res}m": list(names) for res, names in GROUPS.items()},
        "note": "bands: B01..B12 without B10, B8A between B08 and B09 (reBEN, BigEarthNet v1, "
                "TorchGeo); columns: the order inside each stored tensor column",
    }


def labeled_schema(reference_maps: bool) -> PatchSchema:
    """The patch table of a labeled build; files live under ``patches/split=<split>/``.

    Args:
        reference_maps: append the ``reference_map`` column.
    """
    extra = (REFERENCE_MAP,) if reference_maps else ()
    return PatchSchema(TILING_COLUMNS + LABEL_COLUMNS + extra)


LABEL_SCHEMA = pa.schema(
    [pa.field("patch_index", pa.int32(), nullable=False)]
    + [pa.field(c.name, c.arrow_type, nullable=False) for c in RULE_COLUMNS]
    + [pa.field("drop_unlabeled", pa.bool_(), nullable=False)]
)
"""The label table both label rules return, one row per patch of a tile or strip:
``patch_index`` (row-major, 0..n-1), the :data:`RULE_COLUMNS` (``multi_hot_*`` as raw bytes, the
dataset's tensor layout) and ``drop_unlabeled`` (the rule's drop decision)."""

METADATA_COLUMNS: tuple[Column, ...] = (
    Column("patch_id", pa.string(), "reBEN/v2 name"),
    Column("labels", pa.list_(pa.string()), "reBEN 19-class names"),
    Column("split", pa.string(), "train, validation or test"),
    Column("country", pa.string(), "country of the tile (null when ambiguous)"),
    Column("s1_name", pa.string(), "Sentinel-1 patch name (null: not paired)"),
    Column("s2v1_name", pa.string(), "BigEarthNet v1 name"),
    Column("contains_seasonal_snow", pa.bool_(), "snow flag"),
    Column("contains_cloud_or_shadow", pa.bool_(), "cloud/shadow flag"),
    Column("labels_43", pa.list_(pa.string()), "the paper's 43-class names"),
    Column("tile_id", pa.string(), "MGRS tile"),
    Column("product_id", pa.string(), "source L2A product"),
    Column("footprint_wgs84", pa.binary(), "patch footprint as WKB in EPSG:4326"),
)
"""``metadata.parquet``: the reBEN columns first (as TorchGeo's ``BigEarthNetV2`` reads them),
then ours."""

METADATA_SCHEMA = pa.schema([(c.name, c.arrow_type) for c in METADATA_COLUMNS])
"""Arrow schema of ``metadata.parquet`` (plain, no key-value metadata)."""

HISTOGRAM_SCHEMA = pa.schema([("product_id", pa.string()), ("histograms", pa.binary())])
"""``histograms.parquet``: each product's train-split band histograms (zlib-compressed
little-endian int64, :meth:`bigearthnet.dataset.stats.BandHistograms.to_bytes`), the exact
source of ``stats.json``; appends recompute the statistics from it."""


def tensor_columns_from_metadata(schema: pa.Schema) -> dict[str, TensorColumn]:
    """Rebuild tensor column specs from a Parquet file's key-value metadata (no pickle)."""
    meta = schema.metadata or {}
    if SCHEMA_KEY not in meta:
        raise ValueError("Parquet file carries no bigearthnet.schema metadata")
    doc = json.loads(meta[SCHEMA_KEY])
    return {
        c["name"]: TensorColumn(c["name"], c["dtype"], tuple(c["shape"]), c["description"],
                                tuple(c["bands"]), bool(c.get("nullable", False)))
        for c in doc["columns"] if c["kind"] == "tensor"
    }
