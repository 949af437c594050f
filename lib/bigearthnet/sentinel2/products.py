"""Discover Sentinel-2 L2A products and locate their 12 bands and SCL.

Three layouts are understood:

* a ``<name>.SAFE`` folder in ESA's layout (``GRANULE/*/IMG_DATA/R10m|R20m|R60m/*_<band>_<res>.jp2``);
* the same SAFE zipped (``<name>.zip`` or ``<name>.SAFE.zip``), read through GDAL's ``/vsizip/``
  without extracting;
* a STAC item JSON (``"type": "Feature"``) whose assets are COGs (keys ``B02`` … or the Earth
  Search names ``blue`` …, hrefs relative to the item, absolute paths, or http(s)/s3 URLs).

Discovery lists files only; no pixel is read. It runs on the Spark driver. It also reads the
checksums a product carries (``manifest.safe``, STAC ``file:checksum``) into the source, so the
task that reads the files verifies them (:mod:`bigearthnet.sentinel2.checksums`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bigearthnet.errors import (
    BigEarthNetError,
    EmptyInputError,
    FileNameError,
    InputNotFoundError,
    MissingBandError,
    StacItemError,
)
from bigearthnet.sentinel2 import checksums
from bigearthnet.sentinel2.bands import BANDS, SCL, STAC_ASSET_ALIASES
from bigearthnet.sentinel2.naming import ProductName, parse_product_name
from bigearthnet.storage import ObjectStore, S3Uri, is_s3_uri

ALL_LAYERS: tuple[str, ...] = tuple(b.name for b in BANDS) + (SCL.name,)
_RESOLUTION = {b.name: b.resolution_m for b in BANDS} | {SCL.name: SCL.resolution_m}


@dataclass(frozen=True)
class ProductSource:
    """Where one product's layers are, as GDAL paths.

    Args:
        product_id: the full L2A product name.
        kind: ``safe``, ``zip`` or ``stac``.
        path: the SAFE folder, zip file or STAC item file.
        layers: layer name (``B01`` … ``B12``, ``SCL``) -> GDAL-readable path.
        checksums: layer name -> expected size and digest
            (:meth:`~bigearthnet.sentinel2.checksums.Expected.to_json`), for the layers the
            product gives one; empty when it carries none.
        checksums_from: the ``manifest.safe`` or STAC item the checksums come from.
    """

    product_id: str
    kind: str
    path: str
    layers: dict[str, str]
    checksums: dict[str, dict] = field(default_factory=dict)
    checksums_from: str = ""

    def to_json(self) -> str:
        """Serialise (sent to Spark tasks as a string)."""
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> ProductSource:
        """Inverse of ``to_json``."""
        return ProductSource(**json.loads(text))


@dataclass(frozen=True)
class DiscoveryFailure:
    """A product that could not be resolved; kept for ``on_error: skip``."""

    path: str
    error_type: str
    message: str


def _pick_band_file(names: list[str], layer: str, product: str, where: str) -> str:
    res = _RESOLUTION[layer]
    pattern = f"*/IMG_DATA/R{res}m/*_{layer}_{res}m.jp2"
    hits = sorted(n for n in names if fnmatch.fnmatch(n, pattern) and "/GRANULE/" in "/" + n)
    if not hits:
        raise MissingBandError(
            f"product {product}: band {layer} not found in {where} (expected "
            f"GRANULE/*/IMG_DATA/R{res}m/*_{layer}_{res}m.jp2). Re-download the product or "
            "remove it from the input folder (on_error: skip builds the others)."
        )
    return hits[0]


def resolve_safe_dir(path: Path) -> ProductSource:
    """Locate the layers of an unzipped SAFE product."""
    name = parse_product_name(path.name, source=str(path))
    names = [str(p.relative_to(path)) for p in (path / "GRANULE").glob("*/IMG_DATA/R*m/*.jp2")]
    rels = {layer: _pick_band_file(names, layer, name.name, str(path)) for layer in ALL_LAYERS}
    listed = checksums.read_safe_manifest(path)
    return ProductSource(
        name.name, "safe", str(path), {layer: str(path / rel) for layer, rel in rels.items()},
        _layer_checksums(rels, listed), str(path / checksums.SAFE_MANIFEST) if listed else "")


def _layer_checksums(rels: dict[str, str], listed: dict[str, checksums.Expected]) -> dict[str, dict]:
    """The manifest's entries of the layers (paths relative to the SAFE root)."""
    out = {}
    for layer, rel in rels.items():
        expected = listed.get(Path(rel).as_posix())
        if expected is not None:
            out[layer] = expected.to_json()
    return out


def resolve_safe_zip(path: Path) -> ProductSource:
    """Locate the layers of a zipped SAFE product, as ``/vsizip/`` paths."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            tops = sorted({n.split("/", 1)[0] for n in names
                           if n.split("/", 1)[0].endswith(".SAFE")})
            listed = checksums.read_zip_manifest(zf, tops[0], str(path)) if tops else {}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        from bigearthnet.errors import CorruptRasterError

        raise CorruptRasterError(f"product zip {path} cannot be read ({exc}); re-download it") from exc
    product = tops[0] if tops else path.name
    name = parse_product_name(product, source=str(path))
    members = {layer: _pick_band_file(names, layer, name.name, str(path)) for layer in ALL_LAYERS}
    rels = {layer: m.split("/", 1)[1] if m.startswith(f"{product}/") else m
            for layer, m in members.items()}
    return ProductSource(
        name.name, "zip", str(path),
        {layer: f"/vsizip/{path.resolve()}/{m}" for layer, m in members.items()},
        _layer_checksums(rels, listed),
        f"{path}!{product}/{checksums.SAFE_MANIFEST}" if listed else "")


def _href_to_gdal(href: str, item_path: Path) -> str:
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    if href.startswith("s3://"):
        return "/vsis3/" + href[5:]
    href = href.removeprefix("file://")
    p = Path(href)
    return str(p if p.is_absolute() else (item_path.parent / p).resolve())


def _stac_assets(item: dict, where: str) -> tuple[ProductName, list[tuple[str, str, dict, str]]]:
    """The product name of a STAC item and ``(layer, asset key, asset, href)`` of each layer.

    Args:
        item: the item's JSON.
        where: the item's path or URI, for messages.

    Raises:
        ProductNameError, StacItemError, MissingBandError: see :func:`resolve_stac_item`.
    """
    props = item.get("properties") or {}
    raw_name = props.get("s2:product_uri") or item.get("id") or ""
    name = parse_product_name(str(raw_name), source=where)
    assets = item.get("assets")
    if not isinstance(assets, dict):
        raise StacItemError(f"STAC item {where} (product {name.name}) has no 'assets' mapping; "
                            "fix the item or re-download it")
    found = []
    for layer in ALL_LAYERS:
        key = next((k for k in STAC_ASSET_ALIASES[layer] if k in assets), None)
        if key is None:
            raise MissingBandError(
                f"product {name.name}: STAC item {where} has no asset for band {layer} "
                f"(looked for keys {', '.join(STAC_ASSET_ALIASES[layer])}); fix the item or "
                "re-download the product"
            )
        href = assets[key].get("href") if isinstance(assets[key], dict) else None
        if not href:
            raise StacItemError(f"STAC item {where}: asset {key} has no href; fix the item or "
                                "re-download the product")
        found.append((layer, key, assets[key], href))
    return name, found


def resolve_stac_item(path: Path, item: dict | None = None) -> ProductSource:
    """Locate the layers of a STAC item with COG assets."""
    if item is None:
        try:
            item = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StacItemError(f"STAC item {path} cannot be read as JSON ({exc}); re-download "
                                "it or fix it") from exc
    name, found = _stac_assets(item, str(path))
    layers: dict[str, str] = {}
    expected: dict[str, dict] = {}
    for layer, key, asset, href in found:
        gdal_path = _href_to_gdal(href, path)
        if not gdal_path.startswith("/vsi") and not os.path.exists(gdal_path):
            raise MissingBandError(
                f"product {name.name}: band {layer} file {gdal_path} (asset {key} of {path}) "
                "does not exist; re-download the product or fix the asset's href"
            )
        layers[layer] = gdal_path
        checksum = checksums.stac_asset_checksum(asset, f"STAC item {path}, asset {key}")
        if checksum is not None:
            expected[layer] = checksum.to_json()
    return ProductSource(name.name, "stac", str(path), layers, expected,
                         f"STAC item {path}" if expected else "")


def _is_stac_item(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StacItemError(f"{path} is not valid JSON ({exc}); remove it or fix it") from exc
    if isinstance(doc, dict) and doc.get("type") == "Feature" and "assets" in doc:
        return doc
    return None


def _walk(root: Path):
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and entry.name.endswith(".SAFE"):
            yield "safe", entry
        elif entry.is_dir():
            yield from _walk(entry)
        elif entry.suffix == ".zip":
            yield "zip", entry
        elif entry.suffix == ".json":
            yield "json", entry


def discover_products(root: str | Path) -> tuple[list[ProductSource], list[DiscoveryFailure]]:
    """Find every product under ``root``.

    Returns:
        The resolved products sorted by product id, and the entries that failed to resolve.

    Raises:
        InputNotFoundError: ``root`` does not exist.
        EmptyInputError: ``root`` holds no product at all.
        BigEarthNetError: a duplicated product id (the same product twice).
        BucketNotFoundError, ObjectStoreAccessError: an ``s3://`` root cannot be listed.
    """
    if is_s3_uri(root):
        return _checked(str(root), *discover_s3_products(S3Uri.parse(str(root))))
    root = Path(root)
    _check_utf8(str(root), "input")
    if not root.exists():
        raise InputNotFoundError(f"input folder {root} does not exist")
    if root.is_file():
        candidates = [("zip" if root.suffix == ".zip" else "json" if root.suffix == ".json" else "safe", root)]
    elif root.name.endswith(".SAFE"):  # one SAFE folder given directly
        candidates = [("safe", root)]
    else:
        candidates = list(_walk(root))
    sources: list[ProductSource] = []
    failures: list[DiscoveryFailure] = []
    for kind, path in candidates:
        try:
            if kind == "safe":
                sources.append(resolve_safe_dir(path))
            elif kind == "zip":
                sources.append(resolve_safe_zip(path))
            else:
                item = _is_stac_item(path)
                if item is not None:
                    sources.append(resolve_stac_item(path, item))
            if sources and sources[-1].path == str(path):
                for layer_path in [sources[-1].path, *sources[-1].layers.values()]:
                    _check_utf8(layer_path, f"product {sources[-1].product_id}: file")
        except BigEarthNetError as exc:
            if sources and sources[-1].path == str(path):
                sources.pop()
            failures.append(DiscoveryFailure(str(path), type(exc).__name__, str(exc)))
    return _checked(str(root), sources, failures)


def printable(path: str) -> str:
    """A path as text that can be printed, stored in JSON or Arrow: bytes that are not UTF-8
    (surrogate escapes in Python) become ``\\xff`` escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _check_utf8(path: str, what: str) -> None:
    """GDAL (through rasterio), Arrow and JSON need UTF-8 paths: refuse others by name."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise FileNameError(
            f"{what} {printable(path)} has a name that is not valid UTF-8 (GDAL, Parquet and "
            "JSON need UTF-8 paths); rename it"
        ) from None


def _checked(root: str, sources: list[ProductSource],
             failures: list[DiscoveryFailure]) -> tuple[list[ProductSource], list[DiscoveryFailure]]:
    """Refuse an empty input and duplicated products; sort by product id."""
    if not sources and not failures:
        raise EmptyInputError(
            f"no Sentinel-2 L2A product in {root}: expected <name>.SAFE folders, SAFE .zip files "
            "or STAC item .json files with COG assets"
        )
    seen: dict[str, str] = {}
    for src in sources:
        if src.product_id in seen:
            raise BigEarthNetError(
                f"product {src.product_id} appears twice: {seen[src.product_id]} and {src.path}; "
                "keep one"
            )
        seen[src.product_id] = src.path
    sources.sort(key=lambda s: s.product_id)
    return sources, failures


# --- products on an object store (s3://bucket/prefix) ----------------------------------------


def discover_s3_products(prefix: S3Uri) -> tuple[list[ProductSource], list[DiscoveryFailure]]:
    """Find every product under an ``s3://`` prefix, from one recursive listing.

    The same three layouts as on disk: ``<name>.SAFE/`` prefixes (layers as ``/vsis3/…``),
    SAFE zips (their central directory read with ranged GETs through pyarrow, layers as
    ``/vsizip//vsis3/…``) and STAC items (hrefs relative to the item's key become
    ``/vsis3/…``). Checksums are not read for these sources (the task cannot stream
    ``/vsis3/`` files to verify them).

    Raises:
        InputNotFoundError: nothing under ``prefix``.
        BucketNotFoundError, ObjectStoreAccessError: the bucket is missing or not readable.
    """
    store = ObjectStore()
    store.settings.apply()  # the sources are /vsis3/ paths: GDAL opens them here too
    base, files = prefix, store.list(prefix)
    if not files and prefix.key and store.exists(prefix):  # one zip or STAC item
        base, files = prefix.parent, {prefix.name: store.info(prefix).size}
    if not files:
        store.check_bucket(prefix)
        raise InputNotFoundError(f"input {prefix} holds no object; check the prefix")
    safes: dict[str, list[str]] = {}
    others: list[str] = []
    for rel in sorted(files):
        parts = rel.split("/")
        cut = next((i for i, p in enumerate(parts[:-1]) if p.endswith(".SAFE")), None)
        if cut is not None:
            safes.setdefault("/".join(parts[:cut + 1]), []).append("/".join(parts[cut + 1:]))
        elif rel.endswith((".zip", ".json")):
            others.append(rel)
    sources: list[ProductSource] = []
    failures: list[DiscoveryFailure] = []
    for rel in sorted(safes) + others:
        uri = base.join(rel)
        try:
            if rel in safes:
                sources.append(_resolve_s3_safe(uri, safes[rel]))
            elif rel.endswith(".zip"):
                sources.append(_resolve_s3_zip(store, uri))
            else:
                source = _resolve_s3_stac(store, uri, base, files)
                if source is not None:
                    sources.append(source)
        except BigEarthNetError as exc:
            failures.append(DiscoveryFailure(str(uri), type(exc).__name__, str(exc)))
    return sources, failures


def _resolve_s3_safe(uri: S3Uri, names: list[str]) -> ProductSource:
    name = parse_product_name(uri.name, source=str(uri))
    layers = {layer: uri.join(_pick_band_file(names, layer, name.name, str(uri))).gdal
              for layer in ALL_LAYERS}
    return ProductSource(name.name, "safe", str(uri), layers)


def _resolve_s3_zip(store: ObjectStore, uri: S3Uri) -> ProductSource:
    from bigearthnet.errors import CorruptRasterError

    try:
        with store.fs.open_input_file(uri.path) as fh, zipfile.ZipFile(fh) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, EOFError) as exc:
        raise CorruptRasterError(f"product zip {uri} cannot be read ({exc}); re-upload it") from exc
    except OSError as exc:
        from bigearthnet.storage import object_error

        raise object_error(exc, uri, "read") from None
    tops = sorted({n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".SAFE")})
    name = parse_product_name(tops[0] if tops else uri.name, source=str(uri))
    layers = {layer: f"/vsizip/{uri.gdal}/{_pick_band_file(names, layer, name.name, str(uri))}"
              for layer in ALL_LAYERS}
    return ProductSource(name.name, "zip", str(uri), layers)


def _s3_href(href: str, item: S3Uri) -> tuple[str, S3Uri | None]:
    """(GDAL path, the S3 object when the href is one) of a STAC asset href."""
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href, None
    if is_s3_uri(href):
        target = S3Uri.parse(href)
        return target.gdal, target
    if href.startswith(("/", "file://")):
        return href.removeprefix("file://"), None
    parts: list[str] = item.parent.key.split("/") if item.parent.key else []
    for part in href.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    target = S3Uri(item.bucket, "/".join(parts))
    return target.gdal, target


def _resolve_s3_stac(store: ObjectStore, uri: S3Uri, base: S3Uri,
                     files: dict[str, int]) -> ProductSource | None:
    try:
        doc = json.loads(store.read_bytes(uri))
    except (ValueError, UnicodeDecodeError) as exc:
        raise StacItemError(f"{uri} is not valid JSON ({exc}); remove it or fix it") from exc
    if not (isinstance(doc, dict) and doc.get("type") == "Feature" and "assets" in doc):
        return None
    name, found = _stac_assets(doc, str(uri))
    layers: dict[str, str] = {}
    for layer, key, _, href in found:
        gdal, target = _s3_href(href, uri)
        if target is not None:
            listed = (target.bucket == base.bucket and target.key.startswith(f"{base.key}/")
                      and base.relative(target.path) in files)
            if not listed and not store.exists(target):
                raise MissingBandError(
                    f"product {name.name}: band {layer} file {target} (asset {key} of {uri}) "
                    "does not exist; re-download the product or fix the asset's href")
        elif not gdal.startswith("/vsi") and not os.path.exists(gdal):
            raise MissingBandError(
                f"product {name.name}: band {layer} file {gdal} (asset {key} of {uri}) "
                "does not exist; re-download the product or fix the asset's href")
        layers[layer] = gdal
    return ProductSource(name.name, "stac", str(uri), layers)
