"""Probe sets from a folder of images and a labels CSV: each image is read with Pillow,
resized, center-cropped and normalised as stated (torchvision's ``Resize``, ``CenterCrop``,
``ToTensor``, ``Normalize``), and stacked as float32 of shape (n, channels, height, width).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.store._probeset import ProbeSet
from actstore.store._sources import column_cells, label_columns, read_table

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_OPTIONS", "image_probe_set"]

#: options of :func:`image_probe_set` beyond the folder and name
IMAGE_OPTIONS = ("labels", "file_column", "resize", "crop", "mean", "std", "mode", "input_name")
#: the channel statistics torchvision's ImageNet models are trained with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MODES = {"L": 1, "RGB": 3, "RGBA": 4}


def _pair(value: int | Sequence[int] | None, what: str) -> tuple[int, ...] | None:
    """``None``, ``(size,)`` (the shorter side) or ``(height, width)``, all positive."""
    if value is None:
        return None
    vals = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(vals) not in (1, 2) or not all(
            isinstance(v, (int, np.integer)) and v > 0 for v in vals):
        raise ActstoreError(
            f"{what} must be one positive whole number or two (height, width), not {value!r}"
        )
    return tuple(int(v) for v in vals)


def _stats(value: str | Sequence[float] | None, default: tuple[float, ...], channels: int,
           what: str) -> tuple[float, ...]:
    if value is None:
        return default * channels if len(default) == 1 else default
    if isinstance(value, str):
        if value != "imagenet":
            raise ActstoreError(f"{what} {value!r}: give numbers, or 'imagenet'")
        value = IMAGENET_MEAN if what == "mean" else IMAGENET_STD
    vals = tuple(float(v) for v in value)
    if len(vals) == 1:
        vals = vals * channels
    if len(vals) != channels or (what == "std" and min(vals) <= 0):
        raise ActstoreError(
            f"{what} {list(vals)} does not fit images of {channels} channel(s); give one value "
            f"or {channels}{' positive ones' if what == 'std' else ''}"
        )
    return vals


def _resize(img: Any, size: tuple[int, ...]) -> Any:
    """torchvision's ``Resize``: one size sets the shorter side (the longer one keeps the
    aspect ratio, rounded down), two set (height, width); bilinear, antialiased."""
    from PIL import Image

    w, h = img.size
    if len(size) == 2:
        new_h, new_w = size
    elif w <= h:
        new_w, new_h = size[0], int(size[0] * h / w)
    else:
        new_h, new_w = size[0], int(size[0] * w / h)
    return img.resize((new_w, new_h), Image.Resampling.BILINEAR)


def _crop(arr: np.ndarray, size: tuple[int, ...], where: Path) -> np.ndarray:
    """torchvision's ``CenterCrop`` of an (h, w, c) array (offsets rounded to nearest)."""
    ch, cw = (size[0], size[0]) if len(size) == 1 else size
    h, w = arr.shape[:2]
    if ch > h or cw > w:
        raise ActstoreError(
            f"image {where} is {h}x{w} after resizing, smaller than the crop {ch}x{cw}; give "
            "a smaller crop or a larger resize"
        )
    top, left = round((h - ch) / 2.0), round((w - cw) / 2.0)
    return arr[top:top + ch, left:left + cw]


def _read(path: Path, mode: str | None, resize: tuple[int, ...] | None,
          crop: tuple[int, ...] | None) -> tuple[np.ndarray, str]:
    """One image as float32 (h, w, c) in [0, 1], and its mode as stored."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as f:
            f.load()
            stored = f.mode
            img: Image.Image = f if mode is None or f.mode == mode else f.convert(mode)
            if img.mode not in _MODES:
                raise ActstoreError(
                    f"image {path} has mode {img.mode}; give mode=RGB or mode=L to convert "
                    f"the images (modes read: {', '.join(_MODES)})"
                )
            if resize is not None:
                img = _resize(img, resize)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as e:
        raise ActstoreError(f"cannot read image {path} ({e}); give PNG, JPEG or other files "
                            "Pillow reads") from None
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return (arr if crop is None else _crop(arr, crop, path)), stored


def image_probe_set(folder: str | Path, *, labels: str | Path | None = None,
                    name: str | None = None, file_column: str = "file",
                    resize: int | Sequence[int] | None = None,
                    crop: int | Sequence[int] | None = None,
                    mean: str | Sequence[float] | None = None,
                    std: str | Sequence[float] | None = None, mode: str | None = None,
                    input_name: str | None = None) -> ProbeSet:
    """A probe set of the images in ``folder`` listed by a labels CSV.

    Each image is converted to ``mode`` (if given), resized, center-cropped, scaled to [0, 1]
    and normalised per channel, ``(x - mean) / std``: torchvision's ``Resize(resize)``,
    ``CenterCrop(crop)``, ``ToTensor()``, ``Normalize(mean, std)``.

    Parameters
    ----------
    folder : str or Path
        The images.
    labels : str or Path, optional
        A CSV with a header: a file-name column (paths relative to ``folder``), label columns
        and optional ``sample`` ids (default: the file names). Default ``folder/labels.csv``.
    name : str, optional
        Probe set name (default: the folder's name).
    file_column : str
        The column of file names (default ``file``).
    resize : int or (int, int), optional
        One number: the shorter side (aspect ratio kept); two: (height, width). Bilinear.
    crop : int or (int, int), optional
        Center crop to a square of this side, or to (height, width).
    mean, std : list of float or "imagenet", optional
        Per-channel normalisation (one value for every channel, or one per channel; default
        mean 0, std 1). ``"imagenet"``: torchvision's ImageNet statistics.
    mode : {"RGB", "L", "RGBA"}, optional
        Convert every image to this Pillow mode; without it all images must share one.
    input_name : str, optional
        Store the images as the named input ``input_name`` (``pixel_values`` for Hugging
        Face vision models, passed as a keyword argument) rather than as one positional
        array.

    Returns
    -------
    ProbeSet
        float32 inputs of shape (n, channels, height, width); the attrs record every step.

    Raises
    ------
    ActstoreError
        A missing folder, labels file, column or image, images of different modes or (without
        resize and crop) different sizes, a crop larger than an image, statistics that do
        not fit the channels, or a label column with empty or NaN cells.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ActstoreError(f"image folder {root} does not exist")
    table_path = Path(labels) if labels is not None else root / "labels.csv"
    if not table_path.is_file():
        raise ActstoreError(
            f"labels file {table_path} does not exist; give a CSV of file names and labels"
            + (" (labels=FILE)" if labels is None else "")
        )
    if mode is not None and mode not in _MODES:
        raise ActstoreError(f"mode {mode!r} is not one of {', '.join(_MODES)}")
    size, box = _pair(resize, "resize"), _pair(crop, "crop")
    table = read_table(table_path)
    files = column_cells(table, table_path, file_column, "file", "file_column=NAME")
    lab, classes = label_columns(table, table_path, {file_column, "sample"})
    images: list[np.ndarray] = []
    modes: dict[str, str] = {}
    for f in files:
        path = root / f
        if not path.is_file():
            raise ActstoreError(f"image {path} listed in {table_path} does not exist")
        arr, stored = _read(path, mode, size, box)
        modes.setdefault(stored, f)
        if mode is None and len(modes) > 1:
            (m1, f1), (m2, f2) = list(modes.items())[:2]
            raise ActstoreError(
                f"images of different modes: {f1} is {m1}, {f2} is {m2}; give mode=RGB (or "
                "mode=L) to convert them all"
            )
        if images and arr.shape != images[0].shape:
            raise ActstoreError(
                f"images of different sizes after resize and crop: {files[0]} is "
                f"{images[0].shape[0]}x{images[0].shape[1]}, {f} is {arr.shape[0]}x"
                f"{arr.shape[1]}; give resize= and crop= to bring them to one size"
            )
        images.append(arr)
    x = np.stack(images).transpose(0, 3, 1, 2)  # (n, c, h, w)
    channels = x.shape[1]
    m = _stats(mean, (0.0,), channels, "mean")
    s = _stats(std, (1.0,), channels, "std")
    x = ((x - np.asarray(m, np.float32)[:, None, None])
         / np.asarray(s, np.float32)[:, None, None]).astype(np.float32)
    attrs: dict[str, Any] = {
        "generator": "images", "source": root.name, "labels_file": table_path.name,
        "file_column": file_column, "mode": mode or next(iter(modes)),
        "resize": None if size is None else list(size), "interpolation": "bilinear",
        "crop": None if box is None else list(box), "scale": "1/255",
        "mean": list(m), "std": list(s), "layout": "NCHW",
    }
    if classes:
        attrs["classes"] = classes
    sample = table.get("sample", np.asarray(files, dtype=str))
    return ProbeSet(name=name or root.name, labels=lab, sample=sample, attrs=attrs,
                    inputs=x if input_name is None else {input_name: x})

