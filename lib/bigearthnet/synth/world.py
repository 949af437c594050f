"""The seeded synthetic world: CLC 2018 GeoPackage + Sentinel-2 L2A products + ground truth.

``synthesize(config, out_dir)`` writes::

    out_dir/clc/clc2018.gpkg                    CLC polygons, EPSG:3035, Code_18, ID, Area_Ha
    out_dir/products/<NAME>.SAFE/...            format "jp2": ESA SAFE layout, lossless JP2,
                                                manifest.safe with every file's size and MD5
    out_dir/products/<NAME>/<NAME>.json, *.tif  format "cog": STAC item (file:checksum and
                                                file:size per asset) + one COG per layer
    out_dir/truth/<NAME>_clc10m.tif             uint16 CLC code map at 10 m (0 = no CLC)
    out_dir/truth/world.json                    seed, config, per product: tile, CRS, origin,
                                                conditions used, measured SCL fractions, files

The same config gives byte-identical files; a different seed gives a different world.
``world.json`` is written last and marks a complete world; every product is written to a
temporary sibling folder and renamed when complete.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio.features
import shapely
from pydantic import Field
from pyproj import Transformer

from bigearthnet.configbase import StrictModel
from bigearthnet.constants import FULL_TILE_PX, PATCH_SIZE_PX
from bigearthnet.errors import ConfigError
from bigearthnet.sentinel2.bands import (
    SCL_CLOUD_HIGH,
    SCL_CLOUD_MEDIUM,
    SCL_CLOUD_SHADOW,
    SCL_NO_DATA,
    SCL_SNOW,
    SCL_THIN_CIRRUS,
)
from bigearthnet.sentinel2.grid import tile_origin
from bigearthnet.sentinel2.naming import ProductName, parse_product_name
from bigearthnet.synth import landcover, writers
from bigearthnet.synth.conditions import (
    WINTER_MONTHS,
    ConditionFields,
    ProductConditions,
    draw_conditions,
    merge_conditions,
)
from bigearthnet.synth.noise import LatticeNoise, hash01
from bigearthnet.synth.render import POLYGON_BRIGHTNESS, Scene, brightness_map
from bigearthnet.synth.spectra import RGB_IDENTICAL_GROUPS

log = logging.getLogger(__name__)

PATCH_PX = PATCH_SIZE_PX
_SALT_POLY_BRIGHTNESS = 50
GUARANTEED_FRACTION = 0.25
"""In a world of >= 2 products, at least one has this much cloud and one this much snow."""


class SynthConfig(StrictModel):
    """Configuration of ``bigearthnet synth``.

    Args:
        products: full L2A product names to synthesize.
        tiles: number of real products to draw (seeded) from ``reben_products.csv``.
        size_px: tile side in 10 m pixels: a multiple of 120, or 10980 (a full tile).
        format: ``jp2`` (SAFE folders) or ``cog`` (COGs + STAC item).
        seed: world seed.
        conditions: per-product overrides of the drawn conditions (key: product name).
    """

    products: list[str] = Field(default_factory=list)
    tiles: int = 0
    size_px: int = 1200
    format: Literal["jp2", "cog"] = "jp2"
    seed: int = 0
    conditions: dict[str, ProductConditions] = Field(default_factory=dict)


def validate_config(config: SynthConfig) -> None:
    """Check what the model's types cannot.

    Raises:
        ConfigError: bad ``size_px`` or ``tiles``.
    """
    s = config.size_px
    if s <= 0 or s > FULL_TILE_PX or (s % PATCH_PX != 0 and s != FULL_TILE_PX):
        raise ConfigError(
            f"synth size_px={s} is invalid: use a multiple of {PATCH_PX} up to "
            f"{FULL_TILE_PX // PATCH_PX * PATCH_PX}, or exactly {FULL_TILE_PX} (a full tile)"
        )
    if config.tiles < 0:
        raise ConfigError(f"synth tiles={config.tiles} is invalid: use 0 or more")


def derive_key(seed: int, *parts: object) -> int:
    """A non-negative 64-bit integer derived from the seed and labels (stable across runs)."""
    text = "/".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def reben_product_names() -> list[str]:
    """The distinct real product names of ``reben_products.csv`` (baseline N0205)."""
    text = resources.files("bigearthnet.data").joinpath("reben_products.csv").read_text()
    names = {
        f"{r['mission']}_MSIL2A_{r['sensing']}_N0205_{r['orbit']}_{r['tile']}_{r['sensing']}"
        for r in csv.DictReader(text.splitlines())
    }
    return sorted(names)


def resolve_products(config: SynthConfig) -> list[ProductName]:
    """The products of the world: the named ones, then ``tiles`` drawn from the CSV.

    Raises:
        ProductNameError: a malformed product name.
        ConfigError: duplicated names, too many tiles, or conditions for an unknown product.
    """
    names = [parse_product_name(n, "synth config 'products'") for n in config.products]
    if len({n.name for n in names}) != len(names):
        raise ConfigError("synth 'products' lists a product twice; list each once")
    n_draw = config.tiles if (config.tiles or config.products) else 1
    if n_draw:
        pool = [n for n in reben_product_names() if n not in {p.name for p in names}]
        if n_draw > len(pool):
            raise ConfigError(f"synth tiles={config.tiles}: only {len(pool)} real products to draw from")
        rng = np.random.default_rng(derive_key(config.seed, "draw-products"))
        picked = sorted(rng.choice(len(pool), size=n_draw, replace=False))
        names += [parse_product_name(pool[i]) for i in picked]
    unknown = sorted(set(config.conditions) - {n.name for n in names})
    if unknown:
        raise ConfigError(
            f"synth 'conditions' names products that are not in the world: {unknown}. "
            "Use the full product names listed in 'products'."
        )
    return names


def resolve_conditions(config: SynthConfig, names: list[ProductName]) -> list[ProductConditions]:
    """Draw each product's conditions, apply overrides, and make a world of >= 2 products hold
    a cloudy one and a snowy one (unless overrides fix every candidate)."""
    out = []
    for n in names:
        drawn = draw_conditions(np.random.default_rng(derive_key(config.seed, n.name, "conditions")),
                                n.sensing_time.month)
        out.append(merge_conditions(drawn, config.conditions.get(n.name)))
    if len(names) < 2:
        return out
    rng = np.random.default_rng(derive_key(config.seed, "guarantee"))
    over = {k: v.model_dump(exclude_none=True) for k, v in config.conditions.items()}
    if not any(c.cloud_fraction >= GUARANTEED_FRACTION for c in out):
        cand = [i for i, n in enumerate(names) if "cloud_fraction" not in over.get(n.name, {})]
        if cand:
            i = int(rng.choice(cand))
            shadow = over.get(names[i].name, {}).get("shadow", True)
            out[i] = out[i].model_copy(update={"cloud_fraction": 0.4, "shadow": shadow})
    if not any(c.snow_fraction >= GUARANTEED_FRACTION for c in out):
        cand = [i for i, n in enumerate(names) if "snow_fraction" not in over.get(n.name, {})]
        winter = [i for i in cand if names[i].sensing_time.month in WINTER_MONTHS]
        if cand:
            i = int(rng.choice(winter or cand))
            out[i] = out[i].model_copy(update={"snow_fraction": 0.5})
    return out


def _to_utm(geoms: np.ndarray, epsg: int) -> np.ndarray:
    tr = Transformer.from_crs(landcover.CLC_CRS_EPSG, epsg, always_xy=True)
    return shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def rasterize_tile(
    geoms_3035: np.ndarray, tree: shapely.STRtree, region: shapely.Geometry, epsg: int,
    transform: rasterio.Affine, size_px: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterize the CLC polygons onto a tile grid (pixel-centre rule).

    Returns:
        ``(local, global_ids)``: ``local`` is ``(size, size)`` uint16/uint32 holding 1 + the
        position in ``global_ids`` of the polygon covering each pixel centre (0 = none).
    """
    ids = np.sort(tree.query(region, predicate="intersects"))
    utm = _to_utm(geoms_3035[ids], epsg)
    dtype = "uint16" if len(ids) < np.iinfo(np.uint16).max else "uint32"
    local = rasterio.features.rasterize(
        zip(utm, range(1, len(ids) + 1), strict=True), out_shape=(size_px, size_px),
        transform=transform, fill=0, all_touched=False, dtype=dtype,
    )
    return local, ids


def _scl_stats(scl: np.ndarray) -> dict:
    total = scl.size
    cloud = np.isin(scl, (SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_THIN_CIRRUS))
    n = scl.shape[0] // (PATCH_PX // 2)
    blocks = (slice(0, n * 60), slice(0, n * 60))

    def full(mask: np.ndarray) -> int:
        m = mask[blocks].reshape(n, 60, n, 60)
        return int(m.all(axis=(1, 3)).sum())

    return {
        "cloud": round(float(cloud.sum()) / total, 6),
        "shadow": round(float((scl == SCL_CLOUD_SHADOW).sum()) / total, 6),
        "snow": round(float((scl == SCL_SNOW).sum()) / total, 6),
        "nodata": round(float((scl == SCL_NO_DATA).sum()) / total, 6),
        "patches_fully_cloud_or_shadow": full(cloud | (scl == SCL_CLOUD_SHADOW)),
        "patches_fully_snow": full(scl == SCL_SNOW),
    }


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def synthesize(config: SynthConfig, out_dir: Path) -> dict:
    """Write a seeded synthetic world (see the module docstring for the layout).

    Args:
        config: the world's configuration.
        out_dir: output folder (created; existing files of the same names are replaced).

    Returns:
        The content of ``truth/world.json`` plus ``out_dir`` and per-product ``seconds``.

    Raises:
        ConfigError: invalid configuration.
        ProductNameError: a malformed product name.
    """
    validate_config(config)
    out_dir = Path(out_dir)
    names = resolve_products(config)
    conditions = resolve_conditions(config, names)
    size_px, size_m = config.size_px, config.size_px * 10.0
    origins = [tile_origin(n.tile) for n in names]
    regions = {
        o.tile_id: landcover.tile_region_3035(o.epsg, o.ulx, o.uly, size_m) for o in origins
    }

    t0 = time.perf_counter()
    geoms, codes = landcover.generate_clc([regions[k] for k in sorted(regions)], config.seed)
    clc_path = out_dir / "clc" / "clc2018.gpkg"
    tmp_clc = clc_path.with_name(".clc2018.tmp.gpkg")
    landcover.write_clc_gpkg(tmp_clc, geoms, codes)
    os.replace(tmp_clc, clc_path)
    log.info("CLC world: %d polygons in %.1f s", len(geoms), time.perf_counter() - t0)

    tree = shapely.STRtree(geoms)
    class_of_code = {c: i + 1 for i, c in enumerate(landcover.CODES)}
    poly_class = np.array([class_of_code[c] for c in codes], dtype=np.uint8)
    poly_code = np.array([int(c) for c in codes], dtype=np.uint16)
    poly_factor = (
        1.0 + POLYGON_BRIGHTNESS * (2.0 * hash01(np.arange(len(geoms)), 0, config.seed,
                                                 _SALT_POLY_BRIGHTNESS) - 1.0)
    ).astype(np.float32)

    products_doc, seconds = [], []
    for name, origin, cond in zip(names, origins, conditions, strict=True):
        t1 = time.perf_counter()
        key = derive_key(config.seed, name.name)
        transform10 = writers.layer_transform(origin.ulx, origin.uly, 10)
        local, ids = rasterize_tile(geoms, tree, regions[origin.tile_id], origin.epsg,
                                    transform10, size_px)
        truth_rel = f"truth/{name.name}_clc10m.tif"
        lut_code = np.concatenate([[0], poly_code[ids]]).astype(np.uint16)
        writers.write_truth_map(out_dir / truth_rel, lut_code[local], origin.epsg, transform10)
        class_idx = np.concatenate([[0], poly_class[ids]]).astype(np.uint8)[local]
        texture = LatticeNoise.create(np.random.default_rng([key, 2]), size_m, 2000.0, octaves=4)
        brightness = brightness_map(local, np.concatenate([[1.0], poly_factor[ids]]).astype(np.float32),
                                    texture)
        del local
        fields = ConditionFields.create(np.random.default_rng([key, 1]), size_px, cond,
                                        north=origin.epsg < 32700)
        scene = Scene(class_idx, brightness, fields, key)

        if config.format == "jp2":
            final = out_dir / "products" / f"{name.name}.SAFE"
            product_rel = f"products/{name.name}.SAFE"
        else:
            final = out_dir / "products" / name.name
            product_rel = f"products/{name.name}"
        tmp = final.with_name(f".{final.name}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        files: dict[str, str] = {}
        scl_stats: dict = {}
        order = sorted(writers.LAYERS, key=lambda b: (writers.layer_resolution(b), b))
        for layer in order:
            res = writers.layer_resolution(layer)
            if layer == "SCL":
                data = scene.render_scl()
                scl_stats = _scl_stats(data)
            else:
                data = scene.render_band(layer)
            transform = writers.layer_transform(origin.ulx, origin.uly, res)
            if config.format == "jp2":
                rel = writers.jp2_relpath(name, layer)
                writers.write_jp2(tmp / rel, data, origin.epsg, transform)
            else:
                rel = f"{layer}.tif"
                writers.write_cog(tmp / rel, data, origin.epsg, transform)
            files[layer] = f"{product_rel}/{rel}"
            del data
        scene.release()
        cloud_pct, snow_pct = 100 * scl_stats["cloud"], 100 * scl_stats["snow"]
        if config.format == "jp2":
            rels = [writers.jp2_relpath(name, layer) for layer in writers.LAYERS]
            (tmp / "MTD_MSIL2A.xml").write_text(writers.mtd_xml(name, rels, cloud_pct, snow_pct))
            (tmp / "manifest.safe").write_text(writers.safe_manifest_xml(name, tmp))
            entry_rel = product_rel
        else:
            item = writers.stac_item(name, origin.epsg, origin.ulx, origin.uly, size_px,
                                     cloud_pct, snow_pct,
                                     files={layer: tmp / f"{layer}.tif" for layer in writers.LAYERS})
            writers.write_json(tmp / f"{name.name}.json", item)
            entry_rel = f"{product_rel}/{name.name}.json"
        _replace_dir(tmp, final)
        seconds.append(round(time.perf_counter() - t1, 3))
        log.info("product %s: %.1f s", name.name, seconds[-1])
        products_doc.append({
            "name": name.name,
            "tile": name.tile,
            "epsg": origin.epsg,
            "ulx": origin.ulx,
            "uly": origin.uly,
            "size_px": size_px,
            "path": entry_rel,
            "conditions": cond.model_dump(),
            "scl_fractions": scl_stats,
            "bands": {layer: files[layer] for layer in writers.LAYERS},
            "truth_clc10m": truth_rel,
        })

    world = {
        "seed": config.seed,
        "size_px": size_px,
        "format": config.format,
        "config": config.model_dump(mode="json"),
        "clc": {"path": "clc/clc2018.gpkg", "layer": landcover.LAYER_NAME,
                "crs": f"EPSG:{landcover.CLC_CRS_EPSG}", "n_polygons": len(geoms)},
        "rgb_identical_groups": [list(g) for g in RGB_IDENTICAL_GROUPS],
        "products": products_doc,
    }
    writers.write_json(out_dir / "truth" / "world.json", world)
    return {**world, "out_dir": str(out_dir), "seconds": seconds}

