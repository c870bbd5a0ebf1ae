"""Writes the preprocessing vectors: small images covering what the evaluation transform must handle (odd
sizes, portrait, upscaling, every EXIF orientation, alpha, palettes, grey, 16-bit, each decoded format) plus
the real photos in ../shared/data/photos, and the tensor training/preprocess.py makes of each. The server's
tests (test/preprocess) and training's (training/tests/test_preprocess.py) both check them.

    /usr/bin/python3 -m training.preprocess_vectors [--photos ../shared/data/photos] [--out test/fixtures/preprocess]
"""
from __future__ import annotations

import argparse
import base64
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from .preprocess import decode_image

SIZE = 32


def _scene(w: int, h: int, seed: int) -> np.ndarray:
    """A smooth gradient with noise and a bright off-centre block: resampling and crop errors both show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1), 128 + 0 * x], -1)
    img = (base + rng.normal(0, 24, (h, w, 3))).clip(0, 255)
    img[h // 5: h // 5 + max(1, h // 4), w // 6: w // 6 + max(1, w // 3)] = (250, 30, 200)
    return img.astype(np.uint8)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _synthetic() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for i, (w, h) in enumerate([(33, 32), (100, 75), (75, 100), (50, 35), (640, 427), (47, 32), (20, 13),
                                (1, 300), (31, 33), (257, 129)]):
        scene = Image.fromarray(_scene(w, h, i))
        out[f"rgb-{w}x{h}.jpg" if w * h > 20_000 else f"rgb-{w}x{h}.png"] = (
            _encode(scene, "JPEG", quality=80) if w * h > 20_000 else _encode(scene, "PNG"))
    scene = Image.fromarray(_scene(40, 24, 99))
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        out[f"exif-{o}.jpg"] = _encode(scene, "JPEG", quality=95, exif=exif.tobytes())
    out["q75-420-93x61.jpg"] = _encode(Image.fromarray(_scene(93, 61, 11)), "JPEG", quality=75)
    out["progressive-70x45.jpg"] = _encode(Image.fromarray(_scene(70, 45, 12)), "JPEG", quality=85, progressive=True)
    out["grey-61x40.jpg"] = _encode(Image.fromarray(_scene(61, 40, 13)[..., 0]), "JPEG", quality=90)
    rgb = _scene(64, 48, 14)
    alpha = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))
    out["rgba-64x48.png"] = _encode(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG")
    out["la-48x64.png"] = _encode(Image.fromarray(np.dstack([rgb[..., 1].T, alpha.T]), "LA"), "PNG")
    out["grey-45x45.png"] = _encode(Image.fromarray(_scene(45, 45, 15)[..., 2]), "PNG")
    grey16 = (np.linspace(0, 65535, 50 * 38).reshape(38, 50)).astype(np.uint16)
    out["grey16-50x38.png"] = _encode(Image.fromarray(grey16, "I;16"), "PNG")
    out["bilevel-40x36.png"] = _encode(Image.fromarray(_scene(40, 36, 16)[..., 0] > 128), "PNG")
    pal = Image.fromarray(_scene(56, 40, 17)).quantize(16)
    out["palette-56x40.png"] = _encode(pal, "PNG")
    out["palette-alpha-56x40.png"] = _encode(pal, "PNG", transparency=3)
    out["palette-alpha-56x40.gif"] = _encode(pal, "GIF", transparency=3)
    out["lossless-72x50.webp"] = _encode(Image.fromarray(_scene(72, 50, 18)), "WEBP", lossless=True)
    out["lossy-72x50.webp"] = _encode(Image.fromarray(_scene(72, 50, 19)), "WEBP", quality=80)
    out["rgb-52x36.tiff"] = _encode(Image.fromarray(_scene(52, 36, 20)), "TIFF")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=Path, default=Path("../shared/data/photos"))
    p.add_argument("--out", type=Path, default=Path("test/fixtures/preprocess"))
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, data in _synthetic().items():
        (a.out / name).write_bytes(data)
        cases.append({"file": name, "data": data})
    for f in sorted(a.photos.glob("*")):
        if f.suffix.lower() in (".jpg", ".png"):
            cases.append({"file": f"photos/{f.name}", "data": f.read_bytes()})
    vectors = [{"file": c["file"], "size": [SIZE, SIZE],
                "hwc_base64": base64.b64encode(decode_image(c["data"], SIZE).transpose(1, 2, 0).tobytes()).decode()}
               for c in cases]
    doc = {"about": "Expected uint8 RGB HWC tensors from training/preprocess.py; regenerate with "
                    "/usr/bin/python3 -m training.preprocess_vectors. `photos/` names ../shared/data/photos.",
           "vectors": vectors}
    (a.out / "expected.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{len(vectors)} vectors -> {a.out / 'expected.json'}")


if __name__ == "__main__":
    main()
