"""The evaluation transform (training/preprocess.py): the committed vectors the server is tested against come
from this code, and its geometry and resampling equal torchvision's Resize + CenterCrop (an independent
implementation) where torchvision is installed (.ci/run installs Debian's)."""
import base64
import json

import numpy as np
import pytest
from PIL import Image

from training.preprocess import crop_offset, decode_image, eval_transform, resized_size, to_rgb8

from .conftest import ROOT

FIXTURES = ROOT / "test" / "fixtures" / "preprocess"
VECTORS = json.loads((FIXTURES / "expected.json").read_text())["vectors"]


def _path(file: str):
    return ROOT.parent / "shared" / "data" / file if file.startswith("photos/") else FIXTURES / file


@pytest.mark.parametrize("v", VECTORS, ids=[v["file"] for v in VECTORS])
def test_committed_vectors_are_this_code(v):
    got = decode_image(_path(v["file"]).read_bytes(), v["size"][0]).transpose(1, 2, 0).tobytes()
    assert got == base64.b64decode(v["hwc_base64"])


@pytest.mark.parametrize("w, h", [(640, 427), (427, 640), (100, 75), (50, 35), (33, 32), (20, 13), (1, 300), (257, 129)])
def test_equals_torchvision_resize_and_center_crop(w, h):
    T = pytest.importorskip("torchvision.transforms")
    rng = np.random.default_rng(w * 1000 + h)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    ref = np.asarray(T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(32)])(img))
    assert np.array_equal(eval_transform(img).transpose(1, 2, 0), ref)
    assert T.Resize(32)(img).size == resized_size(w, h, 32)


def test_geometry_rounding():
    assert resized_size(640, 427, 32) == (47, 32) and resized_size(427, 640, 32) == (32, 47)
    assert crop_offset(47, 32) == 8 and crop_offset(45, 32) == 6  # 7.5 -> 8, 6.5 -> 6: half to even


def test_alpha_is_flattened_on_white_and_16_bit_keeps_the_high_byte():
    rgba = Image.fromarray(np.array([[[200, 0, 100, 0], [200, 0, 100, 128], [200, 0, 100, 255]]], np.uint8), "RGBA")
    assert to_rgb8(rgba).tolist() == [[[255, 255, 255], [227, 127, 177], [200, 0, 100]]]
    grey16 = Image.fromarray(np.array([[0, 255, 256, 65535]], np.uint16), "I;16")
    assert to_rgb8(grey16)[0, :, 0].tolist() == [0, 0, 1, 255]


def test_exif_orientation_is_applied():
    with Image.open(FIXTURES / "exif-6.jpg") as img:  # stored 40x24, tagged "rotate 90° clockwise to display"
        assert img.size == (40, 24) and to_rgb8(img).shape == (40, 24, 3)
