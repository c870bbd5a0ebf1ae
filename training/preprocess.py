"""The evaluation transform: encoded image -> uint8 RGB (3, S, S). This is the canonical definition of the
preprocessing contract in docs/model-bundle.md; the server (src/preprocess) reproduces it bit for bit, which
test/fixtures/preprocess (written by `python -m training.preprocess_vectors`) checks on both sides.

1. First frame; EXIF orientation applied; embedded ICC profiles ignored (values taken as sRGB, like CIFAR's).
2. To 8-bit RGB: 16-bit samples keep their high byte; grey is replicated; alpha (or a palette's
   transparent index) is flattened on white: (c*a + 255*(255-a) + 127) // 255.
3. torchvision's Resize(S) on a PIL image: the shorter side to S, the longer to int(S*long/short), with
   Pillow's BILINEAR (a triangle filter widened by the scale when shrinking, i.e. antialiased).
4. torchvision's CenterCrop(S): offsets int(round((size - S) / 2)), Python's round (half to even).
32x32 images pass through steps 3-4 untouched.
"""
from __future__ import annotations

import io

import numpy as np


class DecodeError(Exception):
    """An upload the transform cannot read."""


def resized_size(width: int, height: int, side: int) -> tuple[int, int]:
    """torchvision's Resize(int) output size (width, height)."""
    if width <= height:
        return side, int(side * height / width)
    return int(side * width / height), side


def crop_offset(size: int, crop: int) -> int:
    return int(round((size - crop) / 2.0))


def to_rgb8(img) -> np.ndarray:
    """Step 1-2: a PIL image -> uint8 (H, W, 3)."""
    from PIL import ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16L", "I;16B", "I"):  # 16-bit grey (PNG opens as I or I;16)
        grey = (np.asarray(img).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    rgba = np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    if not has_alpha:
        return rgba.copy()
    c, a = rgba[..., :3].astype(np.uint32), rgba[..., 3:].astype(np.uint32)
    return ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def eval_transform(img, size: int = 32) -> np.ndarray:
    """Steps 1-4 on a PIL image -> uint8 (3, size, size)."""
    from PIL import Image

    rgb = to_rgb8(img)
    h, w = rgb.shape[:2]
    if (w, h) != (size, size):
        if min(w, h) != size:
            w, h = resized_size(w, h, size)
            rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
        top, left = crop_offset(h, size), crop_offset(w, size)
        rgb = rgb[top:top + size, left:left + size]
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def decode_image(data: bytes, size: int = 32) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.seek(0)
            return eval_transform(img, size)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DecodeError(f"cannot decode image: {e}") from e
