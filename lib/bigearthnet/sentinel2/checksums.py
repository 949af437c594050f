"""Checksums that products carry, and their verification when a product is opened.

Real products say what their files should be:

* a SAFE product lists every file in its ``manifest.safe`` as a ``<dataObject>`` whose
  ``<byteStream size="…">`` holds ``<fileLocation href="./GRANULE/…"/>`` and
  ``<checksum checksumName="MD5">hex</checksum>``;
* a STAC item may give each asset ``file:checksum`` (a multihash in hex: ``d510`` + the MD5 hex
  digest, ``1220`` + the SHA-256 hex digest) and ``file:size`` (the STAC *file* extension).

Discovery reads them (:func:`read_safe_manifest`, :func:`stac_asset_checksum`) into the
product's :class:`~bigearthnet.sentinel2.products.ProductSource`; the build task checks every
layer file it is about to read (:func:`verify_layers`) and a mismatch is a
:class:`~bigearthnet.errors.ChecksumMismatchError` naming the file. Files are hashed in 1 MiB
chunks straight from disk (or from the zip member), so memory stays flat and the page cache then
serves GDAL's read of the same bytes. A product without checksums is read as before.
"""

from __future__ import annotations

import hashlib
import os
import threading
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

from bigearthnet.errors import ChecksumMismatchError, ProductManifestError

CHUNK_BYTES = 1 << 20
SAFE_MANIFEST = "manifest.safe"

# multihash codes (https://github.com/multiformats/multicodec): function code, digest length
_MULTIHASH = {"md5": "d510", "sha256": "1220", "sha1": "1114", "sha512": "1340"}
_BY_PREFIX = {prefix: algo for algo, prefix in _MULTIHASH.items()}
_DIGEST_HEX = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}
_SAFE_NAMES = {"MD5": "md5", "SHA-1": "sha1", "SHA1": "sha1", "SHA-256": "sha256",
               "SHA256": "sha256"}


@dataclass(frozen=True)
class Expected:
    """What a file should be: its digest and, when known, its size.

    Args:
        algorithm: ``md5``, ``sha1``, ``sha256`` or ``sha512`` (hashlib names).
        hexdigest: lower-case hex digest.
        size: size in bytes, or ``None``.
    """

    algorithm: str
    hexdigest: str
    size: int | None = None

    def to_multihash(self) -> str:
        """The STAC ``file:checksum`` form: multihash prefix + hex digest."""
        return _MULTIHASH[self.algorithm] + self.hexdigest

    def to_json(self) -> dict:
        """Plain JSON (travels to Spark tasks inside the product source)."""
        return {"algorithm": self.algorithm, "hexdigest": self.hexdigest, "size": self.size}

    @staticmethod
    def from_json(doc: dict) -> Expected:
        """Inverse of :meth:`to_json`."""
        return Expected(doc["algorithm"], doc["hexdigest"], doc.get("size"))


def parse_multihash(text: str, where: str) -> Expected:
    """Read a hex multihash (``d510…`` MD5, ``1220…`` SHA-256).

    Raises:
        ProductManifestError: not a hex multihash of a supported function.
    """
    text = text.strip().lower()
    algo = _BY_PREFIX.get(text[:4])
    if algo is None or len(text) != 4 + _DIGEST_HEX[algo] or not _is_hex(text):
        raise ProductManifestError(
            f"{where}: checksum {text[:80]!r} is not a hex multihash of MD5 (d510…), SHA-1, "
            "SHA-256 (1220…) or SHA-512; fix the item or re-download the product"
        )
    return Expected(algo, text[4:])


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    """The hex digest of a local file (streamed in 1 MiB chunks)."""
    with open(path, "rb") as fh:
        return _digest(_chunks(fh), algorithm)


def file_multihash(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The STAC ``file:checksum`` of a local file: multihash prefix + hex digest."""
    return _MULTIHASH[algorithm] + file_digest(path, algorithm)


def _chunks(fh) -> Iterator[bytes]:
    while chunk := fh.read(CHUNK_BYTES):
        yield chunk


def _digest(chunks: Iterator[bytes], algorithm: str) -> str:
    h = hashlib.new(algorithm)
    for chunk in chunks:
        h.update(chunk)  # hashlib releases the GIL for large buffers
    return h.hexdigest()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_safe_manifest(text: bytes, where: str) -> dict[str, Expected]:
    """The files a ``manifest.safe`` lists with a checksum, by path relative to the SAFE root.

    Args:
        text: the XML.
        where: the manifest's path (for messages).

    Raises:
        ProductManifestError: the XML cannot be parsed, or an entry is malformed.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ProductManifestError(
            f"{where} is not valid XML ({exc}); the product is damaged; re-download the product"
        ) from exc
    out: dict[str, Expected] = {}
    for stream in root.iter():
        if _local(stream.tag) != "byteStream":
            continue
        href = checksum = None
        for child in stream:
            if _local(child.tag) == "fileLocation":
                href = child.get("href")
            elif _local(child.tag) == "checksum":
                checksum = child
        if not href or checksum is None:
            continue
        name = (checksum.get("checksumName") or "").upper()
        algo = _SAFE_NAMES.get(name)
        digest = (checksum.text or "").strip().lower()
        if algo is None or len(digest) != _DIGEST_HEX[algo] or not _is_hex(digest):
            raise ProductManifestError(
                f"{where}: the checksum of {href} ({name or 'no checksumName'} "
                f"{digest[:80]!r}) is malformed; re-download the product"
            )
        size = stream.get("size")
        try:
            size_int = int(size) if size is not None else None
        except ValueError as exc:
            raise ProductManifestError(
                f"{where}: the size of {href} ({size!r}) is not an integer; re-download the product"
            ) from exc
        out[_normalise(href)] = Expected(algo, digest, size_int)
    return out


def _normalise(href: str) -> str:
    href = href.strip().replace("\\", "/")
    while href.startswith("./"):
        href = href[2:]
    return href


def read_safe_manifest(safe_dir: str | os.PathLike) -> dict[str, Expected]:
    """The checksums of an unzipped SAFE folder (empty when it has no ``manifest.safe``)."""
    path = os.path.join(os.fspath(safe_dir), SAFE_MANIFEST)
    try:
        with open(path, "rb") as fh:
            text = fh.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ProductManifestError(f"{path} cannot be read ({exc}); re-download the product") from exc
    return parse_safe_manifest(text, path)


def read_zip_manifest(zf: zipfile.ZipFile, safe_top: str, zip_path: str) -> dict[str, Expected]:
    """The checksums of a zipped SAFE (``<safe_top>/manifest.safe`` inside the zip)."""
    member = f"{safe_top}/{SAFE_MANIFEST}"
    try:
        text = zf.read(member)
    except KeyError:
        return {}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ProductManifestError(
            f"{member} in {zip_path} cannot be read ({exc}); re-download the product"
        ) from exc
    return parse_safe_manifest(text, f"{zip_path}!{member}")


def stac_asset_checksum(asset: dict, where: str) -> Expected | None:
    """An asset's ``file:checksum`` (and ``file:size``), or ``None`` when it has none."""
    text = asset.get("file:checksum")
    if text is None:
        return None
    if not isinstance(text, str):
        raise ProductManifestError(f"{where}: file:checksum must be a hex string, not {text!r}")
    expected = parse_multihash(text, where)
    size = asset.get("file:size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise ProductManifestError(f"{where}: file:size must be a non-negative integer, not {size!r}")
    return Expected(expected.algorithm, expected.hexdigest, size)


def _open_gdal_path(path: str):
    """A binary stream of a local file or of a member of a local zip (``/vsizip/…``).

    Returns ``None`` for paths this process cannot stream itself (``/vsicurl/``, ``/vsis3/``).
    """
    if path.startswith("/vsizip/"):
        inner = path[len("/vsizip/"):]
        cut = inner.find(".zip/")
        if cut < 0 or inner.startswith("/vsi"):  # a zip on an object store: GDAL's to read
            return None
        zf = zipfile.ZipFile(inner[:cut + 4])
        try:
            member = zf.open(inner[cut + 5:])
        except BaseException:
            zf.close()
            raise
        return _ZipMember(zf, member)
    if path.startswith("/vsi"):
        return None
    return open(path, "rb")


class _ZipMember:
    def __init__(self, zf: zipfile.ZipFile, member):
        self.zf, self.member = zf, member

    def read(self, n: int) -> bytes:
        return self.member.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.member.close()
        self.zf.close()
        return False


def _size_of(path: str) -> int | None:
    if path.startswith("/vsizip/"):
        inner = path[len("/vsizip/"):]
        cut = inner.find(".zip/")
        if cut < 0 or inner.startswith("/vsi"):
            return None
        with zipfile.ZipFile(inner[:cut + 4]) as zf:
            return zf.getinfo(inner[cut + 5:]).file_size
    if path.startswith("/vsi"):
        return None
    return os.path.getsize(path)


_FIX = ("The file changed after the product was written (a damaged download or disk); "
        "re-download the product (on_error: skip builds the others).")


def check_size(path: str, expected: Expected, product_id: str, layer: str, listed_in: str) -> None:
    """Compare a file's size with the expected one (a stat, no read).

    Raises:
        ChecksumMismatchError: the sizes differ, or the file cannot be found.
    """
    if expected.size is None:
        return
    try:
        size = _size_of(path)
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        raise ChecksumMismatchError(
            f"product {product_id}: {layer} file {path} cannot be read to check it against "
            f"{listed_in} ({exc}). {_FIX}"
        ) from exc
    if size is not None and size != expected.size:
        raise ChecksumMismatchError(
            f"product {product_id}: {layer} file {path} is {size} bytes, but {listed_in} says "
            f"{expected.size}. {_FIX}"
        )


def verify_file(path: str, expected: Expected, product_id: str, layer: str, listed_in: str,
                stop: threading.Event | None = None) -> bool:
    """Check one file against its expected size and digest, streaming it in 1 MiB chunks.

    Args:
        stop: when set, hashing stops early (returns False).

    Returns:
        True when verified; False when the path cannot be streamed here (``/vsicurl/``,
        ``/vsis3/``) or ``stop`` was set.

    Raises:
        ChecksumMismatchError: size or digest differ; the message names the file and the fix.
    """
    check_size(path, expected, product_id, layer, listed_in)
    try:
        stream = _open_gdal_path(path)
        if stream is None:
            return False
        h = hashlib.new(expected.algorithm)
        with stream:
            for chunk in _chunks(stream):
                if stop is not None and stop.is_set():
                    return False
                h.update(chunk)  # hashlib releases the GIL: decoding goes on meanwhile
    except (OSError, zipfile.BadZipFile, KeyError, EOFError) as exc:
        raise ChecksumMismatchError(
            f"product {product_id}: {layer} file {path} cannot be read to check its checksum "
            f"({exc}). {_FIX}"
        ) from exc
    if h.hexdigest() != expected.hexdigest:
        raise ChecksumMismatchError(
            f"product {product_id}: {layer} file {path} has {expected.algorithm.upper()} "
            f"{h.hexdigest()}, but {listed_in} says {expected.hexdigest}. {_FIX}"
        )
    return True


class LayerVerifier:
    """Verify a product's layers in a background thread while they are decoded.

    The sizes are compared at once (a stat each: a truncated file fails before any decoding);
    the digests are computed by one thread that streams each file in 1 MiB chunks. hashlib and
    GDAL both release the GIL, so on a free core the hashing costs no wall time, and the page
    cache serves the second reader of each file. :meth:`result` waits for the thread and raises
    the first mismatch.

    Args:
        product_id: the product (for messages).
        layers: layer name -> GDAL path.
        checksums: layer name -> :meth:`Expected.to_json` (layers without one are skipped).
        listed_in: the manifest or STAC item the checksums come from (for messages).

    Raises:
        ChecksumMismatchError: a size differs (from the constructor).
    """

    def __init__(self, product_id: str, layers: dict[str, str], checksums: dict[str, dict],
                 listed_in: str):
        self._todo = [(layer, path, Expected.from_json(checksums[layer]))
                      for layer, path in layers.items() if layer in checksums]
        for layer, path, expected in self._todo:
            check_size(path, expected, product_id, layer, listed_in)
        self._args = (product_id, listed_in)
        self._stop = threading.Event()
        self._box: dict = {}
        self._thread = threading.Thread(target=self._run, name=f"verify-{product_id}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        product_id, listed_in = self._args
        verified = 0
        try:
            for layer, path, expected in self._todo:
                verified += verify_file(path, expected, product_id, layer, listed_in, self._stop)
        except BaseException as exc:  # noqa: BLE001 - handed to result()
            self._box["error"] = exc
        self._box["verified"] = verified

    def result(self) -> int:
        """Wait for the digests; return how many files were verified.

        Raises:
            ChecksumMismatchError: the first file whose digest differs.
        """
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._box["verified"]

    def mismatch(self) -> BaseException | None:
        """Wait for the digests; return the mismatch found, if any (used to explain a failure
        met while decoding: a damaged file is the better diagnosis)."""
        self._thread.join()
        return self._box.get("error")

    def cancel(self) -> None:
        """Stop hashing (at the next chunk) and wait for the thread."""
        self._stop.set()
        self._thread.join()


def verify_layers(product_id: str, layers: dict[str, str], checksums: dict[str, dict],
                  listed_in: str) -> int:
    """Check every layer that has an expected checksum, in this thread; return how many were
    verified.

    Raises:
        ChecksumMismatchError: the first layer whose size or digest differs.
    """
    verified = 0
    for layer, path in layers.items():
        doc = checksums.get(layer)
        if doc is not None:
            verified += verify_file(path, Expected.from_json(doc), product_id, layer, listed_in)
    return verified
