"""Open one product's 13 layers, validate their georeferencing, and read patch-row strips.

This is the I/O edge of tiling: it runs inside a Spark task, one product per task, and reads
strips of patch rows so a full 10980 px tile never sits in memory at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from bigearthnet.constants import patch_px
from bigearthnet.errors import (
    AssetUnreachableError,
    BigEarthNetError,
    CorruptRasterError,
    GeoreferenceMismatchError,
    RasterFormatError,
)
from bigearthnet.sentinel2.bands import BANDS, GROUPS, SCL
from bigearthnet.sentinel2.checksums import LayerVerifier
from bigearthnet.sentinel2.grid import PatchGrid
from bigearthnet.sentinel2.products import ProductSource
from bigearthnet.storage import gdal_remote_error

_RES = {b.name: b.resolution_m for b in BANDS} | {SCL.name: SCL.resolution_m}
_TOLERANCE_M = 1e-6
_FIX = ("The product's files are inconsistent: re-download the product, or remove it from the "
        "input (on_error: skip builds the others).")


@dataclass
class Strip:
    """Pixels of a strip of whole patch rows, per band, as read from disk.

    ``bands[name]`` has shape ``(n_rows * px, n_cols * px)`` at the band's native resolution
    (px = 120, 60 or 20); ``scl`` has shape ``(n_rows * 60, n_cols * 60)``.
    """

    row0: int
    n_rows: int
    bands: dict[str, np.ndarray]
    scl: np.ndarray


class OpenProduct(contextlib.AbstractContextManager):
    """The opened, validated layers of one product.

    Args:
        source: where the layers are.
        verify: check the layers against the checksums the product carries (manifest.safe,
            STAC ``file:checksum``): sizes at once, digests in a background thread while the
            strips are decoded; the last strip is handed out only after every digest matched
            (``verified`` then counts the files checked). Off only where no pixel is read (the
            driver's plan of a ``sedona-spark`` build).

    Raises:
        ChecksumMismatchError: a layer's size or digest differs from the product's checksums.
        CorruptRasterError: a layer cannot be opened.
        RasterFormatError: wrong dtype, band count or resolution.
        GeoreferenceMismatchError: layers disagree in CRS, origin or extent.
        TileTooSmallError: the tile holds no whole patch.
    """

    def __init__(self, source: ProductSource, verify: bool = True):
        self.source = source
        self._datasets: dict[str, rasterio.io.DatasetReader] = {}
        self._stack = contextlib.ExitStack()
        self.verified = 0
        self._verifier = None
        if verify and source.checksums:
            self._verifier = LayerVerifier(source.product_id, source.layers, source.checksums,
                                           source.checksums_from)
            self._stack.callback(self._verifier.cancel)
        try:
            for layer, path in source.layers.items():
                self._datasets[layer] = self._stack.enter_context(self._open(layer, path))
            self.crs, self.epsg, self.grid = self._validate()
        except BigEarthNetError as exc:
            self._raise_mismatch(exc)
            self._stack.close()
            raise
        except BaseException:
            self._stack.close()
            raise

    def _raise_mismatch(self, exc: BaseException) -> None:
        """A file that fails to open or decode and differs from its checksum: the checksum
        mismatch is the diagnosis (the file was damaged after it was written)."""
        if self._verifier is not None:
            mismatch = self._verifier.mismatch()
            if mismatch is not None:
                self._stack.close()
                raise mismatch from exc

    def _open(self, layer: str, path: str):
        try:
            return rasterio.open(path)
        except RasterioError as exc:
            if path.startswith("/vsicurl/"):
                url = path.removeprefix("/vsicurl/")
                raise AssetUnreachableError(
                    f"product {self.source.product_id}: cannot open the {layer} asset {url} "
                    f"({exc}). Check that the URL is reachable from every executor (network, "
                    "proxy, credentials), or re-download the product with its assets."
                ) from exc
            remote = gdal_remote_error(path, exc, f"product {self.source.product_id}: {layer}: ")
            if remote is not None:
                raise remote from exc
            raise CorruptRasterError(
                f"product {self.source.product_id}: cannot open {layer} file {path}: {exc}. "
                "The file is truncated or corrupt; re-download the product."
            ) from exc

    def _validate(self):
        pid = self.source.product_id
        ref = self._datasets["B02"]
        ref_path = self.source.layers["B02"]
        crs = ref.crs
        if crs is None:
            raise GeoreferenceMismatchError(f"product {pid}: {ref_path} has no CRS. {_FIX}")
        ulx, uly = ref.transform.c, ref.transform.f
        for layer, ds in self._datasets.items():
            path = self.source.layers[layer]
            res = _RES[layer]
            want_dtype = "uint8" if layer == "SCL" else "uint16"
            if ds.count != 1 or ds.dtypes[0] != want_dtype:
                raise RasterFormatError(
                    f"product {pid}: {layer} file {path} has {ds.count} band(s) of "
                    f"{ds.dtypes[0]}, expected 1 band of {want_dtype}. {_FIX}"
                )
            if ds.crs != crs:
                raise GeoreferenceMismatchError(
                    f"product {pid}: {layer} file {path} is in {ds.crs}, but B02 "
                    f"({ref_path}) is in {crs}; all bands of a product must share one CRS. {_FIX}"
                )
            t = ds.transform
            if (abs(t.a - res) > _TOLERANCE_M or abs(t.e + res) > _TOLERANCE_M or t.b or t.d):
                raise GeoreferenceMismatchError(
                    f"product {pid}: {layer} file {path} has pixel size ({t.a}, {t.e}), "
                    f"expected ({res}, {-res}) north-up. {_FIX}"
                )
            if abs(t.c - ulx) > _TOLERANCE_M or abs(t.f - uly) > _TOLERANCE_M:
                raise GeoreferenceMismatchError(
                    f"product {pid}: {layer} file {path} starts at ({t.c}, {t.f}) but B02 "
                    f"({ref_path}) starts at ({ulx}, {uly}); the bands' transforms disagree. {_FIX}"
                )
        grid = PatchGrid(ulx, uly, ref.width, ref.height)
        grid.check(f"product {pid} ({ref_path})")
        for layer, ds in self._datasets.items():
            px = patch_px(_RES[layer])
            if ds.width < grid.n_cols * px or ds.height < grid.n_rows * px:
                raise GeoreferenceMismatchError(
                    f"product {pid}: {layer} file {self.source.layers[layer]} is "
                    f"{ds.width}x{ds.height} px, too small for the {grid.n_cols}x{grid.n_rows} "
                    f"patch grid of B02 ({ref.width}x{ref.height} px). {_FIX}"
                )
        epsg = crs.to_epsg()
        if epsg is None:
            raise GeoreferenceMismatchError(
                f"product {pid}: CRS of {ref_path} has no EPSG code. {_FIX}")
        return crs, int(epsg), grid

    def __exit__(self, *exc_info):
        self._stack.close()
        return False

    def _read_rows(self, layer: str, y0: int, out: np.ndarray) -> None:
        ds = self._datasets[layer]
        px = patch_px(_RES[layer])
        window = Window(0, y0, self.grid.n_cols * px, out.shape[0])
        try:
            ds.read(1, window=window, out=out)
        except RasterioError as exc:
            error = CorruptRasterError(
                f"product {self.source.product_id}: decoding {layer} file "
                f"{self.source.layers[layer]} failed ({exc}). The file is truncated or corrupt; "
                "re-download the product."
            )
            self._raise_mismatch(error)
            raise error from exc

    def strips(self, strip_rows: int) -> Iterator[Strip]:
        """Yield strips of ``strip_rows`` patch rows, top to bottom.

        Each layer is read in windows aligned to its internal block rows (JP2 tiles, COG
        tiles), through a rolling buffer, so every compressed block is decoded exactly once
        whatever the strip height. The arrays of a strip are views into reused buffers: they are
        valid until the next strip is requested.
        """
        streams = {layer: _RowStream(self, layer, strip_rows) for layer in self._datasets}
        for row0 in range(0, self.grid.n_rows, strip_rows):
            n = min(strip_rows, self.grid.n_rows - row0)
            bands = {
                name: streams[name].take(n * patch_px(res))
                for res, names in GROUPS.items() for name in names
            }
            strip = Strip(row0, n, bands, streams["SCL"].take(n * 60))
            if row0 + n >= self.grid.n_rows and self._verifier is not None:
                # Every byte was decoded: no strip counts until every digest matched.
                self.verified = self._verifier.result()
            yield strip


class _RowStream:
    """Hands out consecutive pixel rows of one layer, reading whole block rows at a time.

    Rows are decoded straight into one preallocated buffer (no per-strip allocation or
    concatenation); ``take`` returns a view that stays valid until the next ``take``.
    """

    def __init__(self, product: OpenProduct, layer: str, strip_rows: int):
        self.product = product
        self.layer = layer
        ds = product._datasets[layer]
        px = patch_px(_RES[layer])
        self.limit = product.grid.n_rows * px  # rows covered by whole patches
        block_h = ds.block_shapes[0][0] if ds.block_shapes else 256
        # Read at least ~256 rows at a time for strip-organised (1-row block) files.
        self.step = block_h if block_h >= 64 else max(256 // block_h, 1) * block_h
        self.next_y = 0
        rows = min(strip_rows * px + self.step, self.limit)
        self.buffer = np.empty((rows, product.grid.n_cols * px), dtype=ds.dtypes[0])
        self.start = self.end = 0  # valid rows: buffer[start:end]

    def take(self, n_rows: int) -> np.ndarray:
        if self.end - self.start < n_rows and self.start > 0:
            kept = self.end - self.start
            self.buffer[:kept] = self.buffer[self.start:self.end]
            self.start, self.end = 0, kept
        while self.end - self.start < n_rows:
            y1 = min(self.next_y + self.step - (self.next_y % self.step), self.limit)
            if y1 <= self.next_y or self.end + (y1 - self.next_y) > self.buffer.shape[0]:
                raise CorruptRasterError(
                    f"product {self.product.source.product_id}: {self.layer} ran out of rows"
                )
            self.product._read_rows(self.layer, self.next_y, self.buffer[self.end:self.end + y1 - self.next_y])
            self.end += y1 - self.next_y
            self.next_y = y1
        view = self.buffer[self.start:self.start + n_rows]
        self.start += n_rows
        return view
