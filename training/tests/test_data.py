import subprocess
import sys

import pytest
import torch

from training.data import DataError, augment, load_split

from .conftest import ROOT


def test_binary_layout_loads_real_images(small_binary, cifar_test):
    train = load_split(str(small_binary), "train")
    test = load_split(str(small_binary), "test")
    assert train.images.shape == (1200, 3, 32, 32) and test.images.shape == (400, 3, 32, 32)
    assert train.classes == cifar_test.classes and train.layout == "cifar-binary"
    assert train.images.float().std() > 30  # real pixels, not zeros


def test_image_folder_layout(tmp_path, cifar_test):
    import tarfile

    with tarfile.open(ROOT.parent / "shared" / "data" / "cifar10" / "test.tar.gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile()][:30] + [m for m in tar.getmembers() if m.isfile()][-30:]
        tar.extractall(tmp_path, members=members)
    s = load_split(str(tmp_path), "test")
    assert s.classes == ["airplane", "truck"] and set(s.labels.tolist()) == {0, 1}  # ImageFolder-style classes
    (tmp_path / "batches.meta.txt").write_text("\n".join(cifar_test.classes))
    s = load_split(str(tmp_path), "test")
    assert len(s.labels) == 60 and set(s.labels.tolist()) == {0, 9}  # a class list fixes the label order
    ref = cifar_test.names.index(s.names[0])
    assert torch.equal(s.images[0], cifar_test.images[ref])  # same decode as the tarball path


@pytest.mark.parametrize("setup, message", [
    (lambda p: p / "missing", "data set not found"),
    (lambda p: (p / "x.txt").write_text("x") and p / "x.txt", "is not a folder"),
    (lambda p: p, "no train split"),
    (lambda p: ((p / "data_batch_1.bin").write_bytes(b"\0" * 100), p)[1], "not a multiple of the CIFAR-10 record size"),
    (lambda p: ((p / "train.tar.gz").write_bytes(b"not a tarball"), p)[1], "not a readable tar archive"),
])
def test_bad_data_sets_raise_clear_errors(tmp_path, setup, message):
    path = setup(tmp_path)
    with pytest.raises(DataError, match=message):
        load_split(str(path), "train")


def test_cli_reports_bad_data_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "training", "train", "--data", str(tmp_path / "nope"), "--out",
                        str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: data set not found")


def test_augment_keeps_shape_and_crops_from_padded_image():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    y = augment(x, g, pad=2)
    assert y.shape == x.shape and y.dtype == torch.uint8
    # every output pixel is an input pixel or padding zero
    assert set(y.unique().tolist()) <= set(x.unique().tolist()) | {0}


@pytest.mark.parametrize("flag,value", [("--controller-bits", "8"), ("--diversity", "0.5"), ("--confidence", "0.5"),
                                        ("--sensitivity", "1")])
def test_cli_refuses_a_controller_option_without_a_controller(tmp_path, flag, value):
    r = subprocess.run([sys.executable, "-m", "training", "train", "--out", str(tmp_path / "run"), "--precision",
                        "static", "--bits", "4", flag, value], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr == f"error: {flag} needs --precision dynamic (only a dynamic model has a controller)\n"


@pytest.mark.parametrize("asked, rank, expected", [("cuda", 0, "cuda:0"), ("cuda", 1, "cuda:1"), ("cuda:0", 3, "cuda:0"),
                                                   ("cpu", 0, "cpu")])
def test_training_device_names_an_index(monkeypatch, asked, rank, expected):
    """torch 2.x's cuda.set_device refuses a bare "cuda" (the first GPU run failed on it): --device cuda means
    this process's own GPU."""
    from training.train import TrainConfig, _device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert str(_device(TrainConfig(device=asked), rank)) == expected
