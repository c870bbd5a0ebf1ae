"""CIFAR-10 style data sets: the packed image folder (train.tar.gz / test.tar.gz of class folders), a plain
image folder, or the official binary layout (data_batch_*.bin, test_batch.bin). No downloads, ever.

Images are decoded once into a uint8 tensor (N, 3, H, W) and cached; augmentation (random crop with
padding, horizontal flip) runs as tensor ops on whatever device holds the data, the GPU included.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import preprocess

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CACHE_VERSION = 2  # 2: the evaluation transform of training/preprocess.py


class DataError(Exception):
    """A missing or malformed data set; the CLI prints it as one line."""


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, 3, H, W)
    labels: torch.Tensor  # int64 (N,)
    classes: List[str]
    names: List[str]  # "<class>/<file>" (or "<batch>#<index>"), the order of `images`
    fingerprint: str  # sha256 over the sorted names and bytes of the members
    layout: str

    def subset(self, limit: Optional[int], seed: int = 0) -> "Split":
        """A class-balanced, seeded subset of at most `limit` images (all when limit is None)."""
        if limit is None or limit >= len(self.labels):
            return self
        g = torch.Generator().manual_seed(seed)
        per = -(-limit // len(self.classes))
        keep = []
        for c in range(len(self.classes)):
            idx = (self.labels == c).nonzero(as_tuple=True)[0]
            keep.append(idx[torch.randperm(len(idx), generator=g)[:per]])
        keep = torch.sort(torch.cat(keep))[0][:limit]
        return Split(self.images[keep], self.labels[keep], self.classes, [self.names[i] for i in keep.tolist()],
                     self.fingerprint, self.layout)


# ---- decoding ---------------------------------------------------------------------------------------
def decode_image(data: bytes, size: int = 32) -> np.ndarray:
    """One encoded image -> uint8 (3, size, size), by the evaluation transform (training/preprocess.py)."""
    try:
        return preprocess.decode_image(data, size)
    except preprocess.DecodeError as e:
        raise DataError(str(e)) from e


def _decode_many(blobs: Sequence[bytes]) -> np.ndarray:
    return np.stack([decode_image(b) for b in blobs]) if blobs else np.zeros((0, 3, 32, 32), np.uint8)


def _decode_parallel(blobs: List[bytes]) -> np.ndarray:
    workers = min(8, os.cpu_count() or 1)
    if workers == 1 or len(blobs) < 2000:
        return _decode_many(blobs)
    chunks = [blobs[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers) as ex:
        parts = list(ex.map(_decode_many, chunks))
    out = np.empty((len(blobs), 3, 32, 32), np.uint8)
    for i, p in enumerate(parts):
        out[i::workers] = p
    return out


# ---- layouts ----------------------------------------------------------------------------------------
def _class_of(name: str) -> str:
    parts = name.split("/")
    if len(parts) < 2:
        raise DataError(f"image {name!r} is not inside a class folder")
    return parts[-2]


def _from_members(members: List[Tuple[str, bytes]], layout: str, classes: Optional[List[str]]) -> Split:
    if not members:
        raise DataError(f"no images found ({layout})")
    members.sort(key=lambda m: m[0])
    names = ["/".join(n.split("/")[-2:]) for n, _ in members]
    found = sorted({_class_of(n) for n in names})
    classes = classes or found
    unknown = set(found) - set(classes)
    if unknown:
        raise DataError(f"class folders {sorted(unknown)} are not in the class list {classes}")
    h = hashlib.sha256()
    for n, b in zip(names, (b for _, b in members)):
        h.update(n.encode() + b"\0" + hashlib.sha256(b).digest())
    labels = torch.tensor([classes.index(_class_of(n)) for n in names])
    images = torch.from_numpy(_decode_parallel([b for _, b in members]))
    return Split(images, labels, classes, names, h.hexdigest(), layout)


def _read_classes(root: Path) -> Optional[List[str]]:
    meta = root / "batches.meta.txt"
    if meta.is_file():
        return [line.strip() for line in meta.read_text().splitlines() if line.strip()]
    return None


def _load_tar(path: Path, classes) -> Split:
    try:
        with tarfile.open(path) as tar:
            members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()
                       if m.isfile() and m.name.lower().endswith(IMAGE_SUFFIXES)]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable tar archive ({e})") from e
    return _from_members(members, "image-folder tarball", classes)


def _load_folder(path: Path, classes) -> Split:
    members = [(str(p.relative_to(path)), p.read_bytes()) for p in path.rglob("*")
               if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return _from_members(members, "image folder", classes)


def _load_binary(files: List[Path], classes) -> Split:
    rec = 1 + 3 * 32 * 32
    arrays, names = [], []
    h = hashlib.sha256()
    for f in files:
        raw = f.read_bytes()
        if len(raw) % rec:
            raise DataError(f"{f}: size {len(raw)} is not a multiple of the CIFAR-10 record size {rec}")
        arr = np.frombuffer(raw, np.uint8).reshape(-1, rec)
        arrays.append(arr)
        names += [f"{f.name}#{i}" for i in range(len(arr))]
        h.update(f.name.encode() + b"\0" + hashlib.sha256(raw).digest())
    arr = np.concatenate(arrays)
    classes = classes or [str(i) for i in range(10)]
    if arr[:, 0].max() >= len(classes):
        raise DataError(f"label {arr[:, 0].max()} out of range for {len(classes)} classes")
    images = torch.from_numpy(arr[:, 1:].reshape(-1, 3, 32, 32).copy())
    return Split(images, torch.from_numpy(arr[:, 0].astype(np.int64)), classes, names, h.hexdigest(), "cifar-binary")


def _cache_dir() -> Path:
    return Path(os.environ.get("DQSERVE_CACHE", Path.home() / ".cache" / "dqserve"))


def load_split(root: str, split: str) -> Split:
    """Load `split` ('train' or 'test') from `root`, whichever layout it holds."""
    if split not in ("train", "test"):
        raise ValueError(split)
    path = Path(root)
    if not path.exists():
        raise DataError(f"data set not found: {root} (expected a folder with {split}.tar.gz, {split}/<class>/*.jpg "
                        "or CIFAR-10 binary batches)")
    if not path.is_dir():
        raise DataError(f"data set path {root} is not a folder")
    classes = _read_classes(path)
    tar = path / f"{split}.tar.gz"
    folder = path / split
    binaries = sorted(path.glob("data_batch_*.bin")) if split == "train" else sorted(path.glob("test_batch.bin"))
    if tar.is_file():
        key = hashlib.sha256(tar.read_bytes()).hexdigest()[:32]
        cache = _cache_dir() / f"{split}-{key}-v{CACHE_VERSION}.pt"
        if cache.is_file():
            d = torch.load(cache, weights_only=False)  # our own files; torch 1.13 cannot read plain dicts with True
            return Split(d["images"], d["labels"], d["classes"], d["names"], d["fingerprint"], d["layout"])
        s = _load_tar(tar, classes)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            torch.save(s.__dict__, tmp)
            os.replace(tmp, cache)  # atomic: parallel trainings may decode and cache at once
        except OSError:
            pass  # a read-only home only costs the decode next time
        return s
    if folder.is_dir():
        return _load_folder(folder, classes)
    if binaries:
        return _load_binary(binaries, classes)
    raise DataError(f"no {split} split in {root}: expected {split}.tar.gz, a {split}/ folder of class folders, "
                    f"or {'data_batch_*.bin' if split == 'train' else 'test_batch.bin'}")


# ---- tensors on the device ---------------------------------------------------------------------------
def normalize(images_u8: torch.Tensor, mean=CIFAR_MEAN, std=CIFAR_STD) -> torch.Tensor:
    m = torch.tensor(mean, device=images_u8.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images_u8.device).view(1, -1, 1, 1)
    return (images_u8.float() / 255.0 - m) / s


def augment(images_u8: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding `pad`) and horizontal flip, vectorised on the images' device."""
    n, c, h, w = images_u8.shape
    dev = images_u8.device
    padded = torch.nn.functional.pad(images_u8, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    flip = (torch.rand(n, generator=generator) < 0.5).to(dev)
    rows = oy[:, None] + torch.arange(h, device=dev)[None, :]
    cols = ox[:, None] + torch.arange(w, device=dev)[None, :]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx = torch.arange(n, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()
