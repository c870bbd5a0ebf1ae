"""Shared fixtures: small real data sets cut from ../shared/data/cifar10 (real JPEG-decoded CIFAR images)."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("DQSERVE_SHARED", ROOT.parent / "shared"))
CIFAR = SHARED / "data" / "cifar10"
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def cifar_test():
    from training.data import load_split

    if not (CIFAR / "test.tar.gz").is_file():
        pytest.fail(f"CIFAR-10 not found at {CIFAR}")
    return load_split(str(CIFAR), "test")


@pytest.fixture(scope="session")
def small_binary(cifar_test, tmp_path_factory):
    """The official binary layout (data_batch_1.bin, test_batch.bin) holding 1,200 / 400 real images."""
    root = tmp_path_factory.mktemp("cifar_bin")
    train = cifar_test.subset(1600, seed=1)
    imgs, labels = train.images.numpy(), train.labels.numpy().astype(np.uint8)

    def write(path, sel):
        rec = np.concatenate([labels[sel, None], imgs[sel].reshape(len(sel), -1)], axis=1)
        path.write_bytes(rec.astype(np.uint8).tobytes())

    idx = np.arange(len(labels))
    write(root / "data_batch_1.bin", idx[idx % 4 != 0])
    write(root / "test_batch.bin", idx[idx % 4 == 0])
    (root / "batches.meta.txt").write_text("\n".join(cifar_test.classes) + "\n")
    return root
