"""Seeded smooth noise for the synthetic world.

Two kinds of noise are used:

* **Hash noise** (:func:`hash01`, :func:`hash_value_noise`): a pure function of integer lattice
  indices, a seed and a salt. It is defined on the whole plane, so two tiles that overlap see
  exactly the same values; the CLC world uses it (EPSG:3035 coordinates).
* **Lattice noise** (:class:`LatticeNoise`): random values on a finite lattice drawn from a
  ``np.random.Generator`` and interpolated (smoothstep) at pixel centres. It is evaluated
  row-strip by row-strip and at any resolution from the same lattice, so 10, 20 and 60 m
  rasters of one product agree; the per-product fields (texture, clouds, snow) use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MASK64 = (1 << 64) - 1


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def hash01(i: np.ndarray, j: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """Uniform [0, 1) values that depend only on integer indices, the seed and a salt.

    Args:
        i: integer array (any shape, may be negative).
        j: integer array broadcastable with ``i``.
        seed: the world seed (any Python int).
        salt: distinguishes independent fields (any Python int).

    Returns:
        float64 array of the broadcast shape.
    """
    key = np.uint64((seed * 0x2545F4914F6CDD1D + salt * 0x5851F42D4C957F2D) & _MASK64)
    with np.errstate(over="ignore"):
        a = np.asarray(i, dtype=np.int64).astype(np.uint64)
        b = np.asarray(j, dtype=np.int64).astype(np.uint64)
        h = _mix64(a * _GOLDEN + _mix64(np.asarray(key, dtype=np.uint64)))
        h = _mix64(h ^ (b + _GOLDEN))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _smooth(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def hash_value_noise(x: np.ndarray, y: np.ndarray, spacing: float, seed: int, salt: int) -> np.ndarray:
    """Smooth value noise in [0, 1] at arbitrary points, from a hashed lattice.

    Args:
        x: point x coordinates (metres).
        y: point y coordinates (metres).
        spacing: lattice spacing in metres (the feature size).
        seed: world seed.
        salt: field identifier.
    """
    fx, fy = np.asarray(x, float) / spacing, np.asarray(y, float) / spacing
    i0, j0 = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    tx, ty = _smooth(fx - i0), _smooth(fy - j0)
    v00 = hash01(i0, j0, seed, salt)
    v10 = hash01(i0 + 1, j0, seed, salt)
    v01 = hash01(i0, j0 + 1, seed, salt)
    v11 = hash01(i0 + 1, j0 + 1, seed, salt)
    top = v00 + (v10 - v00) * tx
    bottom = v01 + (v11 - v01) * tx
    return top + (bottom - top) * ty


def fractal_hash_noise(
    x: np.ndarray, y: np.ndarray, spacing: float, seed: int, salt: int, octaves: int = 2
) -> np.ndarray:
    """Sum of :func:`hash_value_noise` octaves (halving spacing and weight), rescaled to [0, 1]."""
    total = np.zeros(np.broadcast(np.asarray(x), np.asarray(y)).shape)
    norm = 0.0
    for k in range(octaves):
        w = 0.5**k
        total += w * hash_value_noise(x, y, spacing / 2**k, seed, salt * 16 + k)
        norm += w
    return total / norm


@dataclass(frozen=True)
class LatticeNoise:
    """Fractal value noise on a finite lattice covering a tile (plus a margin).

    Coordinates are metres from the tile's upper-left corner, ``u`` eastwards and ``v``
    southwards. Build it with :meth:`create`; evaluate it with :meth:`grid`.

    Args:
        lattices: one value array per octave, shape ``(ny, nx)``, float32 in [0, 1).
        spacings: lattice spacing of each octave in metres.
        weights: weight of each octave (normalised to sum 1).
        margin: metres the lattices extend beyond the tile on every side.
    """

    lattices: tuple[np.ndarray, ...]
    spacings: tuple[float, ...]
    weights: tuple[float, ...]
    margin: float

    @classmethod
    def create(
        cls,
        rng: np.random.Generator,
        extent_m: float,
        spacing_m: float,
        octaves: int = 3,
        persistence: float = 0.5,
        margin_m: float = 0.0,
    ) -> LatticeNoise:
        """Draw the lattice values.

        Args:
            rng: random generator (consumed).
            extent_m: tile side in metres.
            spacing_m: coarsest lattice spacing in metres.
            octaves: number of octaves, each with half the previous spacing.
            persistence: weight ratio between successive octaves.
            margin_m: extra coverage beyond the tile on every side (for shifted look-ups).
        """
        lattices, spacings, weights = [], [], []
        for k in range(octaves):
            s = spacing_m / 2**k
            n = int(np.ceil((extent_m + 2 * margin_m) / s)) + 3
            lattices.append(rng.random((n, n), dtype=np.float32))
            spacings.append(s)
            weights.append(persistence**k)
        total = sum(weights)
        return cls(tuple(lattices), tuple(spacings), tuple(w / total for w in weights), margin_m)

    def grid(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Evaluate on the grid ``v`` (rows) x ``u`` (columns).

        Args:
            u: 1-D x offsets in metres from the tile's left edge (pixel centres).
            v: 1-D y offsets in metres southwards from the tile's top edge.

        Returns:
            float32 array of shape ``(len(v), len(u))`` with values in [0, 1].
        """
        out = np.zeros((len(v), len(u)), dtype=np.float32)
        for lat, s, w in zip(self.lattices, self.spacings, self.weights, strict=True):
            fu = (np.asarray(u, np.float64) + self.margin) / s
            fv = (np.asarray(v, np.float64) + self.margin) / s
            iu = np.clip(np.floor(fu).astype(np.int64), 0, lat.shape[1] - 2)
            iv = np.clip(np.floor(fv).astype(np.int64), 0, lat.shape[0] - 2)
            tu = _smooth(np.clip(fu - iu, 0.0, 1.0)).astype(np.float32)
            tv = _smooth(np.clip(fv - iv, 0.0, 1.0)).astype(np.float32)
            rows = np.unique(np.concatenate([iv, iv + 1]))
            sub = lat[rows]
            a = sub[:, iu]
            along_u = a + (sub[:, iu + 1] - a) * tu  # (len(rows), len(u))
            pos = np.searchsorted(rows, iv)
            top = along_u[pos]
            bottom = along_u[pos + 1]
            out += w * (top + (bottom - top) * tv[:, None])
        return out
