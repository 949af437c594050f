"""The real BigEarthNet/reBEN product list (package data ``reben_products.csv``)."""

from __future__ import annotations

import csv
from collections import defaultdict
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def product_rows() -> tuple[dict[str, str], ...]:
    """Rows of ``reben_products.csv``: mission, sensing, orbit, tile, country, patches."""
    text = resources.files("bigearthnet.data").joinpath("reben_products.csv").read_text()
    return tuple(csv.DictReader(text.splitlines()))


@lru_cache(maxsize=1)
def product_countries() -> dict[tuple[str, str, str, str], set[str]]:
    """(mission, datatake, orbit, tile) -> the countries the real archive assigns it."""
    out: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)
    for r in product_rows():
        out[(r["mission"], r["sensing"], r["orbit"], r["tile"])].add(r["country"])
    return dict(out)
