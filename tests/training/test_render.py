"""Trifeature renderer: batched output equals the per-pixel reference; geometry checks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from actstore import ActstoreError
from actstore.training import COLORS, SHAPES, TEXTURES, render, render_reference
from actstore.training._render import (
    _PALETTE,
    BOXES,
    POLYGONS,
    SHAPE_FRACTION,
    _shape_mask,
    sample_render_params,
)


def _params(n: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = np.arange(n) % 10
    texture = (np.arange(n) // 10 + np.arange(n)) % 10
    color = rng.integers(0, 10, n)
    return sample_render_params(rng, shape, texture, color, size)


def test_batched_renderer_matches_per_pixel_reference():
    # every shape and every texture at least twice, at an odd size
    p = _params(30, 21, seed=3)
    fast = render(p, 21, chunk=7)
    slow = render_reference(p, 21)
    assert fast.shape == (30, 3, 21, 21) and fast.dtype == np.uint8
    assert np.array_equal(fast, slow)


def test_same_seed_same_images_other_seed_other_images():
    a = render(_params(20, 32, seed=1), 32)
    b = render(_params(20, 32, seed=1), 32)
    c = render(_params(20, 32, seed=2), 32)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_pixels_are_grey_or_the_image_colour():
    p = _params(40, 32, seed=4)
    img = render(p, 32)
    for i in range(len(p)):
        px = img[i].reshape(3, -1).T  # (pixels, 3)
        grey = (px == 128).all(axis=1)
        colour = (px == _PALETTE[p.color[i]]).all(axis=1)
        assert (grey | colour).all()
        assert colour.sum() > 0  # something of the shape is visible


def test_solid_texture_fills_the_shape_and_shape_stays_inside():
    rng = np.random.default_rng(5)
    size = 48
    shape = np.repeat(np.arange(10), 5)
    p = sample_render_params(rng, shape, np.zeros(50, int), np.full(50, 2), size)  # solid blue
    img = render(p, size)
    mask = (img[:, 2] == 255) & (img[:, 0] == 0)  # (n, H, W)
    for i in range(50):
        ys, xs = np.nonzero(mask[i])
        assert len(xs) > 0.05 * size * size
        # the shape lies within its rotated bounding box, which lies within the image
        half = SHAPE_FRACTION * size / 2
        extent = half * (abs(math.cos(p.angle[i])) + abs(math.sin(p.angle[i])))
        assert extent <= p.cx[i] <= size - extent and extent <= p.cy[i] <= size - extent
        assert np.all(np.abs(xs + 0.5 - p.cx[i]) <= extent + 1e-9)
        assert np.all(np.abs(ys + 0.5 - p.cy[i]) <= extent + 1e-9)


def test_polygon_masks_agree_with_matplotlib_paths():
    g = np.linspace(-1.1, 1.1, 157)
    u, v = np.meshgrid(g, g)
    pts = np.stack([u.ravel(), v.ravel()], axis=1)
    for name, poly in POLYGONS.items():
        ours = _shape_mask(name, u, v).ravel()
        ref = MplPath(np.array(poly)).contains_points(pts)
        # points exactly on an edge may go either way
        assert (ours != ref).mean() < 0.002, name
    for name, boxes in BOXES.items():
        ours = _shape_mask(name, u, v).ravel()
        ref = np.zeros(len(pts), bool)
        for x0, x1, y0, y1 in boxes:
            ref |= MplPath(np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])).contains_points(
                pts, radius=1e-9
            )
        assert (ours != ref).mean() < 0.002, name


def test_all_shapes_and_textures_differ():
    size = 32
    combos = list(itertools.product(range(10), range(10)))
    rng = np.random.default_rng(0)
    sh = np.array([c[0] for c in combos])
    tx = np.array([c[1] for c in combos])
    p = sample_render_params(rng, sh, tx, np.zeros(100, int), size)
    # same pose for every image, so only shape and texture differ
    for f in ("angle", "cx", "cy", "tex_angle", "tex_dx", "tex_dy", "seed"):
        getattr(p, f)[:] = getattr(p, f)[0]
    img = render(p, size).reshape(100, -1)
    assert len({row.tobytes() for row in img}) == 100
    assert len(SHAPES) == len(TEXTURES) == len(COLORS) == 10


def test_too_small_image_is_refused():
    with pytest.raises(ActstoreError, match="too small"):
        render(_params(1, 4), 4)
