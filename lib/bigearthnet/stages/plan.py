"""Stage *plan*: a product's patch grid, ids and footprints, from file metadata only.

No pixel is decoded here: the grid comes from the validated georeferencing of the product's
layers (:class:`~bigearthnet.sentinel2.reader.OpenProduct` opens them, reads no data), and every
patch's ids and footprint follow from the grid and the product name. The labels stage joins these
footprints with CLC; the pixels stage fills the same rows with tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import shapely

from bigearthnet.constants import PATCH_SIZE_M, PATCH_SIZE_PX
from bigearthnet.sentinel2.grid import PatchGrid
from bigearthnet.sentinel2.naming import ProductName, parse_product_name
from bigearthnet.sentinel2.products import ProductSource
from bigearthnet.sentinel2.reader import OpenProduct


@dataclass(frozen=True)
class TilePlan:
    """Everything about one product's patches that needs no pixel.

    Args:
        name: the parsed product name.
        grid: the tile's patch grid (origin and size from the files).
        epsg: the tile's UTM EPSG code.
    """

    name: ProductName
    grid: PatchGrid
    epsg: int

    @property
    def product_id(self) -> str:
        """The full product name."""
        return self.name.name

    @property
    def n_patches(self) -> int:
        """Whole patches in the tile."""
        return self.grid.n_patches

    @property
    def extent_patches(self) -> tuple[float, float]:
        """The tile's full extent in patch units, (columns, rows): 91.5 x 91.5 for a full
        10980 px tile, whose last 60 px column and row hold no whole patch."""
        return (self.grid.width_px / PATCH_SIZE_PX, self.grid.height_px / PATCH_SIZE_PX)

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the whole patches, in the tile CRS."""
        g = self.grid
        return (g.ulx, g.uly - g.n_rows * PATCH_SIZE_M, g.ulx + g.n_cols * PATCH_SIZE_M, g.uly)

    def rows_cols(self, row0: int = 0, n_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of every patch of ``n_rows`` patch rows from ``row0``, row-major."""
        n_rows = self.grid.n_rows - row0 if n_rows is None else n_rows
        rows, cols = np.divmod(np.arange(n_rows * self.grid.n_cols), self.grid.n_cols)
        return rows + row0, cols

    def footprints(self, row0: int = 0, n_rows: int | None = None) -> np.ndarray:
        """Patch squares (shapely, tile CRS) in row-major order."""
        rows, cols = self.rows_cols(row0, n_rows)
        left, bottom, right, top = self.grid.bounds(cols, rows)
        return shapely.box(left, bottom, right, top)


def plan_from_product(product: OpenProduct, name: ProductName) -> TilePlan:
    """The plan of an already opened product."""
    return TilePlan(name, product.grid, product.epsg)


def plan_product(source: ProductSource) -> TilePlan:
    """Open a product's layers (metadata only), validate them and return its plan.

    Raises:
        ProductNameError, CorruptRasterError, RasterFormatError, GeoreferenceMismatchError,
            TileTooSmallError: as :class:`~bigearthnet.sentinel2.reader.OpenProduct`.
    """
    name = parse_product_name(source.product_id, source=source.path)
    # Metadata only: the pixel task that reads the files verifies their checksums.
    with OpenProduct(source, verify=False) as product:
        return plan_from_product(product, name)


def id_columns(plan: TilePlan, row0: int, n_rows: int) -> dict[str, pa.Array]:
    """The id and geometry columns of the patch table for ``n_rows`` patch rows from ``row0``.

    Returns:
        ``patch_id``, ``patch_id_v1``, ``product_id``, ``tile_id``, ``sensing_time``, ``col``,
        ``row``, ``epsg`` and ``footprint`` (WKB in the tile CRS), row-major.
    """
    rows, cols = plan.rows_cols(row0, n_rows)
    n = rows.size
    name = plan.name
    footprints = shapely.to_wkb(plan.footprints(row0, n_rows))
    return {
        "patch_id": pa.array([name.patch_name_v2(int(c), int(r)) for c, r in zip(cols, rows)],
                             pa.string()),
        "patch_id_v1": pa.array([name.patch_name_v1(int(c), int(r)) for c, r in zip(cols, rows)],
                                pa.string()),
        "product_id": pa.array([name.name] * n, pa.string()),
        "tile_id": pa.array([name.tile] * n, pa.string()),
        "sensing_time": pa.array([name.sensing_time] * n, pa.timestamp("us", tz="UTC")),
        "col": pa.array(cols.astype(np.int16)),
        "row": pa.array(rows.astype(np.int16)),
        "epsg": pa.array(np.full(n, plan.epsg, dtype=np.int32)),
        "footprint": pa.array(list(footprints), pa.binary()),
    }
