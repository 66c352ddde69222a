"""Which data a run read: content hashes of dataset files and archives, computed once and cached.

A file's SHA-256 is cached with its size and modification time (nanoseconds); a changed file hashes again.
The cache sits beside the data (`.namexp-hashes.json` in the file's folder) where that folder is writable,
else under the cache folder (`<cache_dir>/hashes/`), so read-only shared datasets are hashed once too.

A dataset's fingerprint is `sha256:<hex>` over the names, sizes and hashes of the files read (CIFAR pickles),
over the relative paths and sizes of an image folder's files, or over the bytes of generated images.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from namexp.files import write_text_atomic

HASH_CACHE_FILE = ".namexp-hashes.json"
_CHUNK = 1 << 20


def file_sha256(path: Path, cache_dir: Path) -> str:
    """The hex SHA-256 of `path`'s content, from the hash cache while its size and mtime are unchanged."""
    path = Path(path).resolve()
    stat = path.stat()
    cache_file = _cache_file(path.parent, cache_dir)
    cached = _read_cache(cache_file)
    entry = cached.get(path.name)
    if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return entry["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    cached[path.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
    try:
        write_text_atomic(cache_file, json.dumps(cached, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # a cache that cannot be written costs a re-hash next time, nothing else
    return digest.hexdigest()


def files_fingerprint(folder: Path, names: Iterable[str], cache_dir: Path) -> str:
    """The fingerprint of the named files in `folder`: names, sizes and content hashes."""
    lines = [f"{name}\t{(folder / name).stat().st_size}\t{file_sha256(folder / name, cache_dir)}" for name in names]
    return _fingerprint(lines)


def listing_fingerprint(root: Path) -> str:
    """The fingerprint of every file below `root` by relative path and size (image folders: too many to hash)."""
    lines = sorted(
        f"{p.relative_to(root).as_posix()}\t{p.stat().st_size}"
        for p in root.rglob("*")
        if p.is_file() and p.name != HASH_CACHE_FILE
    )
    return _fingerprint(lines)


def tensors_fingerprint(*tensors: torch.Tensor) -> str:
    """The fingerprint of generated data: the bytes (and shapes) of its tensors."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.contiguous().numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def _fingerprint(lines: list[str]) -> str:
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _cache_file(folder: Path, cache_dir: Path) -> Path:
    if os.access(folder, os.W_OK):
        return folder / HASH_CACHE_FILE
    return Path(cache_dir) / "hashes" / (hashlib.sha256(str(folder).encode()).hexdigest()[:24] + ".json")


def _read_cache(cache_file: Path) -> dict:
    try:
        cached = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) else {}
