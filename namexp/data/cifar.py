"""CIFAR-10/100 in the standard "python version" layout, read without trusting the pickles.

Where the data is looked for, in order, below the data root (`data.root`, else `$NAMEXP_DATA`, else
`~/.cache/namexp/data`), and nowhere else:
  1. the unpacked folder (`cifar-100-python/`, `cifar-10-batches-py/`);
  2. its archive (`.tar.gz` as distributed, or `.tar.xz`), unpacked once into the cache folder
     (`data.cache_dir`, else `$NAMEXP_CACHE`, else `~/.cache/namexp`) under a name that carries the
     archive's SHA-256, so two different archives never share an unpacked copy and a changed one is
     unpacked again;
  3. a download of the official archive into the data root, when `data.download` is true and the
     machine is online (torchvision's downloader, with the official md5).
A root that holds none of these is an error, whatever the cache holds from other roots.
Files are read with a restricted unpickler that allows only the three numpy names a CIFAR pickle
uses, and their contents are checked (shape, dtype, label range), so a crafted or damaged file is
refused with a clear message instead of running code or training on garbage.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from namexp.data.identity import file_sha256, files_fingerprint
from namexp.errors import UserError


@dataclass(frozen=True)
class CifarLayout:
    folder: str
    archive_stem: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    meta_file: str  # the class names
    num_classes: int
    url: str
    md5: str


LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py",
        archive_stem="cifar-10-python",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key="labels",
        meta_file="batches.meta",
        num_classes=10,
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": CifarLayout(
        folder="cifar-100-python",
        archive_stem="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key="fine_labels",
        meta_file="meta",
        num_classes=100,
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
    ),
}

# The only globals a CIFAR pickle refers to (numpy's array reconstruction), mapped to their numpy 2
# homes so that no deprecated alias is imported. `_codecs.encode` is how Python 3 writes bytes in a
# protocol-2 pickle (a re-saved CIFAR file); it turns a string into bytes and can run nothing else.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"): ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise _Refused(f"{module}.{name}")
        return super().find_class(*target)


class _Refused(Exception):
    pass


def read_pickle(path: Path) -> dict:
    """Load one CIFAR pickle with the restricted unpickler; any problem becomes a UserError."""
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(io.BufferedReader(f), encoding="latin1").load()
    except _Refused as exc:
        raise UserError(
            f"refusing to load {path}: it references {exc}, which no CIFAR file does (it could run code); "
            "replace it with a file from the official archive"
        ) from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise UserError(
            f"{path} is truncated or corrupt ({type(exc).__name__}): delete it and unpack or download the dataset again"
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a CIFAR pickle (it holds a {type(obj).__name__}, not a dict)")
    return obj


def _images_and_labels(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = read_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise UserError(
            f"{path} is not a CIFAR pickle of this dataset (keys {sorted(batch)[:6]}; expected 'data' and '{label_key}')"
        )
    data, labels = batch["data"], np.asarray(batch[label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise UserError(
            f"{path} is corrupt: 'data' should be uint8 N x 3072, found {getattr(data, 'dtype', type(data))} {shape}"
        )
    if labels.shape != (data.shape[0],) or labels.min() < 0 or labels.max() >= num_classes:
        raise UserError(f"{path} is corrupt: its labels do not match its images or lie outside 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def default_data_root() -> Path:
    return Path(os.environ.get("NAMEXP_DATA") or Path.home() / ".cache" / "namexp" / "data").expanduser()


def default_cache_dir() -> Path:
    return Path(os.environ.get("NAMEXP_CACHE") or Path.home() / ".cache" / "namexp").expanduser()


def locate(name: str, root: Path, cache_dir: Path, download: bool) -> Path:
    """The folder holding the unpacked pickles of the data root's dataset, unpacking or downloading as needed."""
    layout = LAYOUTS[name]
    for folder in (root / layout.folder, root / layout.archive_stem / layout.folder):
        if folder.is_dir():
            return folder
    for suffix in (".tar.gz", ".tar.xz", ".tgz"):
        archive = root / (layout.archive_stem + suffix)
        if archive.is_file():
            return _unpack_once(archive, layout.folder, cache_dir)
    if download:
        archive = _download(layout, root)
        if archive is not None:
            return _unpack_once(archive, layout.folder, cache_dir)
    where = f"{root} does not exist" if not root.exists() else f"{root} holds neither {layout.folder}/ nor its archive"
    raise UserError(
        f"{name} not found: {where}, and it is not downloadable{'' if download else ' (data.download=false)'}: "
        f"put {layout.folder}/ or {layout.archive_stem}.tar.gz there, or point NAMEXP_DATA (or data.root) at the folder that holds it"
    )


def unpacked_folder(archive: Path, folder: str, cache_dir: Path) -> Path:
    """Where `archive` is unpacked: a cache entry named by the archive's content hash, one per archive."""
    return cache_dir / f"{folder}-{file_sha256(archive, cache_dir)[:16]}" / folder


def _unpack_once(archive: Path, folder: str, cache_dir: Path) -> Path:
    """Unpack `archive` into its own cache entry once; a crash half-way leaves no partial folder."""
    target = unpacked_folder(archive, folder, cache_dir)
    if target.is_dir():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    except OSError as exc:
        raise UserError(
            f"cannot unpack {archive.name} into {cache_dir} ({exc.strerror}): set data.cache_dir or NAMEXP_CACHE to a writable folder"
        ) from None
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(folder + "/") and m.isfile()]
            if not members:
                raise UserError(f"{archive} holds no {folder}/ folder: is it the right archive?")
            tar.extractall(staging, members=members, filter="data")
        try:
            os.rename(staging / folder, target)
        except OSError:
            if not target.is_dir():  # another process unpacking the same archive won the race otherwise
                raise
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(f"{archive} is truncated or corrupt ({type(exc).__name__}): download it again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _download(layout: CifarLayout, root: Path) -> Path | None:
    from torchvision.datasets.utils import download_url

    filename = layout.url.rsplit("/", 1)[-1]
    created = [p for p in (root, *root.parents) if not p.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
        download_url(layout.url, str(root), filename=filename, md5=layout.md5)
    except Exception:  # offline, proxy, DNS ...: the caller says where to put the files instead
        (root / filename).unlink(missing_ok=True)
        for folder in created:  # leave no empty folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        return None
    return root / filename


@dataclass
class ImageSplits:
    """A whole dataset as uint8 NCHW tensors and int64 labels, split into train and test."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    fingerprint: str  # namexp.data.identity: which data this is
    source: str  # where it was read from (the folder of pickles), or how it was made


def load_cifar(name: str, root: str | None, cache_dir: str | None, download: bool) -> ImageSplits:
    layout = LAYOUTS[name]
    root_path = Path(root).expanduser() if root else default_data_root()
    cache_path = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    folder = locate(name, root_path, cache_path, download)

    def read(files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = []
        for f in files:
            path = folder / f
            if not path.is_file():
                raise UserError(
                    f"{path} is missing: the {name} folder {folder} is incomplete; unpack the archive again"
                )
            parts.append(_images_and_labels(path, layout.label_key, layout.num_classes))
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        return torch.from_numpy(images), torch.from_numpy(labels)

    train_images, train_labels = read(layout.train_files)
    test_images, test_labels = read(layout.test_files)
    files = [
        *layout.train_files,
        *layout.test_files,
        *([layout.meta_file] if (folder / layout.meta_file).is_file() else []),
    ]
    fingerprint = files_fingerprint(folder, files, cache_path)
    return ImageSplits(
        train_images, train_labels, test_images, test_labels, _class_names(folder, name), fingerprint, str(folder)
    )


def _class_names(folder: Path, name: str) -> list[str]:
    key = "label_names" if name == "cifar10" else "fine_label_names"
    path = folder / LAYOUTS[name].meta_file
    if path.is_file():
        names = read_pickle(path).get(key)
        if isinstance(names, list):
            return [str(n) for n in names]
    return [str(i) for i in range(LAYOUTS[name].num_classes)]
