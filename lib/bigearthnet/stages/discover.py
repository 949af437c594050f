"""Which products under an input folder are not in a dataset yet: a scheduler's first question.

``bigearthnet discover --products P --dataset DS`` prints the answer as one JSON object; the
Airflow DAG (``dags/bigearthnet.py``) runs it before each build to skip days without new
products and to choose between the first build and ``build --append``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.errors import IncompleteDatasetError
from bigearthnet.sentinel2.products import discover_products
from bigearthnet.storage import ObjectStore, S3Uri, is_s3_uri


def dataset_products(dataset: str | Path) -> set[str] | None:
    """The product ids in a committed dataset; ``None`` when there is no dataset there.

    Raises:
        IncompleteDatasetError: something is there but it is not a complete dataset (no
            ``_SUCCESS``), so neither a first build nor an append can write it.
    """
    if is_s3_uri(dataset):
        store, root = ObjectStore(), S3Uri.parse(str(dataset))
        if not store.list(root):
            return None
        if not store.exists(root.join("_SUCCESS")):
            raise IncompleteDatasetError(
                f"{dataset} holds objects but no _SUCCESS: it is not a complete dataset; "
                "remove the prefix or rebuild it with --overwrite")
        manifest = json.loads(store.read_bytes(root.join("manifest.json")))
    else:
        layout = DatasetLayout(Path(dataset))
        if not layout.root.exists():
            return None
        if not layout.success.exists():
            raise IncompleteDatasetError(
                f"{dataset} exists but has no {layout.success.name}: it is not a complete "
                "dataset; remove it or rebuild it with --overwrite")
        manifest = json.loads(layout.manifest.read_text())
    return {p["product_id"] for p in manifest["products"]}


def new_products(products: str | Path, dataset: str | Path) -> dict[str, Any]:
    """Compare the products under ``products`` with those in ``dataset``.

    Returns:
        ``{"products", "dataset", "dataset_exists", "new", "present", "unresolved"}``: ``new``
        and ``present`` are product ids, ``unresolved`` the entries that are not readable
        products (path, error type, message; ``build --on-error skip`` would skip them).

    Raises:
        InputNotFoundError, EmptyInputError: as ``build`` for ``products``.
        IncompleteDatasetError: see :func:`dataset_products`.
    """
    sources, failures = discover_products(products)
    have = dataset_products(dataset)
    ids = [s.product_id for s in sources]
    return {
        "products": str(products),
        "dataset": str(dataset),
        "dataset_exists": have is not None,
        "new": [p for p in ids if have is None or p not in have],
        "present": [p for p in ids if have is not None and p in have],
        "unresolved": [{"path": f.path, "error_type": f.error_type, "message": f.message}
                       for f in failures],
    }
