"""Trifeature renderer: shape x texture x colour images, vectorised over a batch.

Every image is a pure function of its :class:`RenderParams` row (shape, texture and colour
ids, shape rotation and centre, texture rotation and phase, noise seed), so that the batched
renderer :func:`render` and the per-pixel reference :func:`render_reference` produce the same
pixels. Geometry is expressed in units of the image size, so that one parameter set renders
at 32 px for CPU studies and at 224 px as in the original study.

Pixel rule: ``pixel = m * t * colour + (1 - m * t) * grey``, with ``m`` the shape mask,
``t`` the binary texture and grey 0.5; images are ``uint8`` of shape ``(n, 3, size, size)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from actstore._errors import ActstoreError

__all__ = [
    "COLORS",
    "SHAPES",
    "TEXTURES",
    "RenderParams",
    "default_texture_period",
    "render",
    "render_reference",
    "sample_render_params",
]

SHAPES: tuple[str, ...] = (
    "triangle", "square", "plus", "circle", "tee",
    "rhombus", "pentagon", "star", "fivesquare", "trapezoid",
)  # fmt: skip
TEXTURES: tuple[str, ...] = (
    "solid", "stripes", "grid", "hexgrid", "dots",
    "noise", "triangles", "zigzags", "rain", "pluses",
)  # fmt: skip
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "pink": (1.0, 0.4, 1.0),
    "cyan": (0.0, 1.0, 1.0),
    "purple": (0.3, 0.0, 0.5),
    "ocean": (0.1, 0.4, 0.5),
    "orange": (1.0, 0.6, 0.0),
    "white": (1.0, 1.0, 1.0),
}
# Colours and the grey background as 8-bit values, computed once, so that both renderers
# write identical bytes.
_PALETTE = np.array(
    [[round(255 * c) for c in rgb] for rgb in COLORS.values()], dtype=np.uint8
)  # (10, 3)
_GREY = 128

# The shape fills a box of SHAPE_FRACTION x image size (128 px of 224 in the original study).
SHAPE_FRACTION = 128.0 / 224.0


def _regular(n: int, radius: float, start: float = -math.pi / 2) -> list[tuple[float, float]]:
    angles = [start + 2 * math.pi * k / n for k in range(n)]
    return [(radius * math.cos(a), radius * math.sin(a)) for a in angles]


def _star(n: int, outer: float, inner: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(2 * n):
        r = outer if k % 2 == 0 else inner
        a = -math.pi / 2 + math.pi * k / n
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


# Polygonal shapes in the unit box [-1, 1]^2 (y pointing down), as vertex lists; a point is
# inside by the even-odd crossing rule. "circle" and the box unions are analytic.
POLYGONS: dict[str, list[tuple[float, float]]] = {
    "triangle": [(0.0, -0.95), (0.95, 0.7), (-0.95, 0.7)],
    "pentagon": _regular(5, 1.0),
    "star": _star(5, 1.0, 0.42),
    "trapezoid": [(-0.5, -0.65), (0.5, -0.65), (1.0, 0.65), (-1.0, 0.65)],
}
# Axis-aligned boxes (x0, x1, y0, y1) whose union is the shape.
BOXES: dict[str, list[tuple[float, float, float, float]]] = {
    "square": [(-0.8, 0.8, -0.8, 0.8)],
    "plus": [(-0.3, 0.3, -1.0, 1.0), (-1.0, 1.0, -0.3, 0.3)],
    "tee": [(-1.0, 1.0, -1.0, -0.45), (-0.28, 0.28, -1.0, 1.0)],
    "fivesquare": [
        (cx - 0.25, cx + 0.25, cy - 0.25, cy + 0.25)
        for cx, cy in ((-0.6, -0.6), (0.6, -0.6), (0.0, 0.0), (-0.6, 0.6), (0.6, 0.6))
    ],
}
_RHOMBUS = (0.6, 1.0)  # half-diagonals along u and v

_SQRT3 = math.sqrt(3.0)
_SQRT3_2 = _SQRT3 / 2.0


@dataclass
class RenderParams:
    """Per-image rendering parameters; every field is an array of shape ``(n,)``.

    Attributes
    ----------
    shape, texture, color : int64 arrays
        Indices into :data:`SHAPES`, :data:`TEXTURES`, :data:`COLORS`.
    angle : float64 array
        Shape rotation in radians.
    cx, cy : float64 arrays
        Shape centre, in pixels.
    tex_angle : float64 array
        Texture rotation in radians.
    tex_dx, tex_dy : float64 arrays
        Texture phase, in texture periods, in ``[0, 1)``.
    seed : int64 array
        Seed of the ``noise`` texture (values in ``[0, 2**32)``).
    """

    shape: np.ndarray
    texture: np.ndarray
    color: np.ndarray
    angle: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    tex_angle: np.ndarray
    tex_dx: np.ndarray
    tex_dy: np.ndarray
    seed: np.ndarray

    def __len__(self) -> int:
        return len(self.shape)

    def take(self, index: np.ndarray | slice) -> RenderParams:
        """The rows ``index`` as a new :class:`RenderParams`."""
        return RenderParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def default_texture_period(size: int) -> float:
    """Texture period in pixels: 10 px at 224 px (as in the original study), at least 4 px."""
    return max(4.0, size * 10.0 / 224.0)


def sample_render_params(
    rng: np.random.Generator,
    shape: np.ndarray,
    texture: np.ndarray,
    color: np.ndarray,
    size: int,
    max_angle: float = 45.0,
) -> RenderParams:
    """Draw rotations, positions, texture phases and noise seeds for given feature values.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness; the draws are made in a fixed order, so one seed gives one set.
    shape, texture, color : int arrays of shape (n,)
        Feature values of each image.
    size : int
        Image side in pixels.
    max_angle : float
        Shape and texture rotations are uniform in ``[-max_angle, max_angle]`` degrees.

    Returns
    -------
    RenderParams
        The shape lies fully inside the image: its centre is uniform over the positions where
        the rotated shape box fits.
    """
    n = len(shape)
    lim = math.radians(max_angle)
    angle = rng.uniform(-lim, lim, n)
    half = SHAPE_FRACTION * size / 2.0
    extent = half * (np.abs(np.cos(angle)) + np.abs(np.sin(angle)))  # half-width of rotated box
    cx = rng.uniform(extent, size - extent)
    cy = rng.uniform(extent, size - extent)
    tex_angle = rng.uniform(-lim, lim, n)
    tex_dx = rng.uniform(0.0, 1.0, n)
    tex_dy = rng.uniform(0.0, 1.0, n)
    seed = rng.integers(0, 2**32, n, dtype=np.int64)
    return RenderParams(
        shape=np.asarray(shape, dtype=np.int64),
        texture=np.asarray(texture, dtype=np.int64),
        color=np.asarray(color, dtype=np.int64),
        angle=angle, cx=cx, cy=cy,
        tex_angle=tex_angle, tex_dx=tex_dx, tex_dy=tex_dy,
        seed=seed,
    )


# --------------------------------------------------------------------------------------------
# Vectorised renderer. Arrays below have shape (B, H, W) unless stated.


def _shape_mask(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of shape ``name`` at unit-box coordinates ``u, v``."""
    if name == "circle":
        return u * u + v * v <= 1.0
    if name == "rhombus":
        return np.abs(u) / _RHOMBUS[0] + np.abs(v) / _RHOMBUS[1] <= 1.0
    if name in BOXES:
        inside = np.zeros(u.shape, dtype=bool)
        for x0, x1, y0, y1 in BOXES[name]:
            inside |= (u >= x0) & (u <= x1) & (v >= y0) & (v <= y1)
        return inside
    pts = POLYGONS[name]
    inside = np.zeros(u.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1], strict=True):
        if y0 == y1:
            continue
        # An edge crosses the horizontal ray to the right of (u, v).
        crosses = (y0 > v) != (y1 > v)
        x_at = x0 + (v - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (u < x_at)
    return inside


def _hash_bit(i: np.ndarray, j: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """One pseudo-random bit per integer cell ``(i, j)`` and seed (32-bit integer mixing)."""
    m = np.uint64(0xFFFFFFFF)
    h = (i.astype(np.int64).astype(np.uint64) * np.uint64(73856093)) & m
    h ^= (j.astype(np.int64).astype(np.uint64) * np.uint64(19349663)) & m
    h ^= (seed.astype(np.uint64) * np.uint64(83492791)) & m
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0x5BD1E995)) & m
    h ^= h >> np.uint64(15)
    return ((h >> np.uint64(7)) & np.uint64(1)).astype(bool)


def _texture(name: str, s: np.ndarray, r: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Binary texture ``name`` at texture coordinates ``s, r`` (in periods)."""
    if name == "solid":
        return np.ones(s.shape, dtype=bool)
    fs = s - np.floor(s)
    fr = r - np.floor(r)
    if name == "stripes":
        return fs < 0.5
    if name == "grid":
        return (fs < 0.25) | (fr < 0.25)
    if name == "dots":
        return (fs - 0.5) ** 2 + (fr - 0.5) ** 2 < 0.09
    if name == "noise":
        return _hash_bit(np.floor(2.0 * s), np.floor(2.0 * r), seed)
    if name == "triangles":
        return (fr > 0.15) & (fr < 0.85) & (np.abs(fs - 0.5) < 0.45 * (fr - 0.15) / 0.7)
    if name == "zigzags":
        z = r + 0.5 * (2.0 * np.abs(fs - 0.5))
        return z - np.floor(z) < 0.5
    if name == "rain":
        row = np.floor(r)
        s2 = s + 0.5 * (row - 2.0 * np.floor(row / 2.0))  # alternate rows shifted half a period
        fs2 = s2 - np.floor(s2)
        return (np.abs(fs2 - 0.5 - 0.3 * (fr - 0.5)) < 0.1) & (np.abs(fr - 0.5) < 0.35)
    if name == "pluses":
        du = np.abs(fs - 0.5)
        dv = np.abs(fr - 0.5)
        return ((du < 0.1) & (dv < 0.35)) | ((dv < 0.1) & (du < 0.35))
    if name == "hexgrid":
        # Honeycomb: Voronoi cells of a triangular lattice (spacing 1 period), which is the
        # union of two rectangular lattices of cell (1, sqrt 3), offset by half a cell; the
        # nearest point of each is found by rounding. A point is on a line where its hexagonal
        # distance to the nearest lattice point nears the apothem 0.5.
        ya = np.floor(r / _SQRT3 + 0.5) * _SQRT3
        xa = np.floor(s + 0.5)
        yb = (np.floor(r / _SQRT3) + 0.5) * _SQRT3
        xb = np.floor(s) + 0.5
        da = (s - xa) ** 2 + (r - ya) ** 2
        db = (s - xb) ** 2 + (r - yb) ** 2
        a_wins = da <= db
        x = np.where(a_wins, s - xa, s - xb)
        y = np.where(a_wins, r - ya, r - yb)
        h = np.maximum(np.abs(0.5 * x + _SQRT3_2 * y), np.abs(-0.5 * x + _SQRT3_2 * y))
        return np.maximum(np.abs(x), h) > 0.38
    raise ActstoreError(f"unknown texture {name!r}; valid textures: {', '.join(TEXTURES)}")


def _cos(a: np.ndarray) -> np.ndarray:
    return np.array([math.cos(x) for x in a.tolist()], dtype=np.float64)


def _sin(a: np.ndarray) -> np.ndarray:
    return np.array([math.sin(x) for x in a.tolist()], dtype=np.float64)


def render(
    params: RenderParams,
    size: int,
    texture_period: float | None = None,
    chunk: int | None = None,
) -> np.ndarray:
    """Render a batch of Trifeature images.

    Parameters
    ----------
    params : RenderParams
        One row per image (see :func:`sample_render_params`).
    size : int
        Image side in pixels.
    texture_period : float, optional
        Texture period in pixels (default :func:`default_texture_period`).
    chunk : int, optional
        Images rendered at once (default: about 2**18 pixels, which keeps the temporaries in
        cache); the temporary memory is about ``chunk * size**2 * 80`` bytes.

    Returns
    -------
    numpy.ndarray of uint8, shape (n, 3, size, size)
    """
    if size < 8:
        raise ActstoreError(f"image size {size} is too small; use at least 8 pixels")
    period = default_texture_period(size) if texture_period is None else float(texture_period)
    n = len(params)
    chunk = chunk or max(1, 2**18 // (size * size))
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    coords = np.arange(size, dtype=np.float64) + 0.5  # pixel centres
    px = coords[None, None, :]  # (1, 1, W)
    py = coords[None, :, None]  # (1, H, 1)
    half = SHAPE_FRACTION * size / 2.0
    centre = size / 2.0
    qx = px - centre
    qy = py - centre
    # math.cos per image (not np.cos) so both renderers use the same libm values.
    cos_a, sin_a = _cos(params.angle)[:, None, None], _sin(params.angle)[:, None, None]
    cos_t, sin_t = _cos(params.tex_angle)[:, None, None], _sin(params.tex_angle)[:, None, None]
    cx, cy = params.cx[:, None, None], params.cy[:, None, None]
    tdx, tdy = params.tex_dx[:, None, None], params.tex_dy[:, None, None]
    seed = params.seed[:, None, None]
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        on = np.empty((stop - start, size, size), dtype=bool)
        # Coordinates are computed per shape / texture group, only for the images of the group.
        shapes = params.shape[start:stop]
        for k in np.unique(shapes):
            rel = np.flatnonzero(shapes == k)
            i = rel + start
            dx = px - cx[i]
            dy = py - cy[i]
            u = (cos_a[i] * dx + sin_a[i] * dy) / half  # (G, H, W) shape-frame coordinates
            v = (cos_a[i] * dy - sin_a[i] * dx) / half
            on[rel] = _shape_mask(SHAPES[k], u, v)
        textures = params.texture[start:stop]
        for k in np.unique(textures):
            rel = np.flatnonzero(textures == k)
            i = rel + start
            if TEXTURES[k] == "solid":
                continue
            s = (cos_t[i] * qx + sin_t[i] * qy) / period + tdx[i]  # (G, H, W) texture coords
            r = (cos_t[i] * qy - sin_t[i] * qx) / period + tdy[i]
            on[rel] &= _texture(TEXTURES[k], s, r, seed[i])
        rgb = _PALETTE[params.color[start:stop]]  # (B, 3)
        out[start:stop] = np.where(on[:, None], rgb[:, :, None, None], np.uint8(_GREY))
    return out


# --------------------------------------------------------------------------------------------
# Reference renderer: one image at a time, one pixel at a time, in plain Python floats. It is
# the baseline of ``bench/render.py`` and the independent check of :func:`render`.


def _ref_polygon(pts: list[tuple[float, float]], u: float, v: float) -> bool:
    inside = False
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1], strict=True):
        if y0 == y1:
            continue
        if (y0 > v) != (y1 > v) and u < x0 + (v - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


def _ref_shape(name: str, u: float, v: float) -> bool:
    if name == "circle":
        return u * u + v * v <= 1.0
    if name == "rhombus":
        return abs(u) / _RHOMBUS[0] + abs(v) / _RHOMBUS[1] <= 1.0
    if name in BOXES:
        return any(x0 <= u <= x1 and y0 <= v <= y1 for x0, x1, y0, y1 in BOXES[name])
    return _ref_polygon(POLYGONS[name], u, v)


def _ref_hash_bit(i: int, j: int, seed: int) -> bool:
    m = 0xFFFFFFFF
    h = ((i & 0xFFFFFFFFFFFFFFFF) * 73856093) & m
    h ^= ((j & 0xFFFFFFFFFFFFFFFF) * 19349663) & m
    h ^= (seed * 83492791) & m
    h ^= h >> 13
    h = (h * 0x5BD1E995) & m
    h ^= h >> 15
    return bool((h >> 7) & 1)


def _ref_texture(name: str, s: float, r: float, seed: int) -> bool:
    if name == "solid":
        return True
    fs = s - math.floor(s)
    fr = r - math.floor(r)
    if name == "stripes":
        return fs < 0.5
    if name == "grid":
        return fs < 0.25 or fr < 0.25
    if name == "dots":
        return (fs - 0.5) ** 2 + (fr - 0.5) ** 2 < 0.09
    if name == "noise":
        return _ref_hash_bit(math.floor(2.0 * s), math.floor(2.0 * r), seed)
    if name == "triangles":
        return 0.15 < fr < 0.85 and abs(fs - 0.5) < 0.45 * (fr - 0.15) / 0.7
    if name == "zigzags":
        z = r + 0.5 * (2.0 * abs(fs - 0.5))
        return z - math.floor(z) < 0.5
    if name == "rain":
        row = math.floor(r)
        s2 = s + 0.5 * (row - 2.0 * math.floor(row / 2.0))
        fs2 = s2 - math.floor(s2)
        return abs(fs2 - 0.5 - 0.3 * (fr - 0.5)) < 0.1 and abs(fr - 0.5) < 0.35
    if name == "pluses":
        du, dv = abs(fs - 0.5), abs(fr - 0.5)
        return (du < 0.1 and dv < 0.35) or (dv < 0.1 and du < 0.35)
    if name == "hexgrid":
        # nearest point of the triangular lattice i * (1, 0) + j * (1/2, sqrt 3 / 2), searched
        # among the neighbours of the rounded coordinates; then the hexagonal norm (largest
        # projection on the normals at 0, 60 and 120 degrees) of the offset
        j0 = round(r / _SQRT3_2)
        i0 = round(s - 0.5 * j0)
        offsets = [(s - i - 0.5 * j, r - _SQRT3_2 * j)
                   for j in range(j0 - 1, j0 + 2) for i in range(i0 - 1, i0 + 2)]
        x, y = min(offsets, key=lambda o: o[0] ** 2 + o[1] ** 2)
        return max(abs(x * math.cos(t) + y * math.sin(t))
                   for t in (0.0, math.pi / 3, 2 * math.pi / 3)) > 0.38
    raise ActstoreError(f"unknown texture {name!r}; valid textures: {', '.join(TEXTURES)}")


def render_reference(
    params: RenderParams, size: int, texture_period: float | None = None
) -> np.ndarray:
    """Render images one pixel at a time (slow): the parameters (without ``chunk``) and the
    output, uint8 of shape (n, 3, size, size), of :func:`render`."""
    period = default_texture_period(size) if texture_period is None else float(texture_period)
    half = SHAPE_FRACTION * size / 2.0
    centre = size / 2.0
    out = np.empty((len(params), 3, size, size), dtype=np.uint8)
    for n in range(len(params)):
        shape, texture = SHAPES[int(params.shape[n])], TEXTURES[int(params.texture[n])]
        rgb = [int(c) for c in _PALETTE[int(params.color[n])]]
        ca, sa = math.cos(params.angle[n]), math.sin(params.angle[n])
        ct, st = math.cos(params.tex_angle[n]), math.sin(params.tex_angle[n])
        cx, cy = float(params.cx[n]), float(params.cy[n])
        tdx, tdy, seed = float(params.tex_dx[n]), float(params.tex_dy[n]), int(params.seed[n])
        for yi in range(size):
            y = yi + 0.5
            for xi in range(size):
                x = xi + 0.5
                dx, dy = x - cx, y - cy
                u = (ca * dx + sa * dy) / half
                v = (ca * dy - sa * dx) / half
                qx, qy = x - centre, y - centre
                s = (ct * qx + st * qy) / period + tdx
                r = (ct * qy - st * qx) / period + tdy
                on = _ref_shape(shape, u, v) and _ref_texture(texture, s, r, seed)
                for c in range(3):
                    out[n, c, yi, xi] = rgb[c] if on else _GREY
    return out
