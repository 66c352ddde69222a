"""Find and load run folders for `namexp compare`.

A run folder is any directory that holds a `record.json` (see docs/run-folder.md). `find_records` walks
the given paths with `os.walk` (pruning the subfolders a run folder is known to hold: checkpoints,
TensorBoard events, Hydra's files ...), `load_runs` parses every record with the standard `json` module
and keeps only what `compare` needs: the per-epoch entries are reduced to the test top-1 error curve,
so that 1,000 records of 200 epochs each load in well under a second or two.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from namexp.errors import UserError
from namexp.nested import flatten, with_later_keys
from namexp.run.layout import NAM_WEIGHTS_FILE, RECORD_FILE, RUN_SUBDIRS, RunFolder

# Record fields that can be used as filter keys next to the flattened config keys.
RECORD_FIELDS = ("data", "backbone", "attention", "sparsity", "sparsity_mode", "seed", "status", "selection_split")

MISSING = "<unset>"


@dataclass
class Run:
    """One run folder, as compare needs it."""

    folder: Path
    record: dict  # the record without its "epochs" list
    flat: dict  # the flattened resolved config: dotted key -> hashable value
    curve: list  # test top-1 error per epoch (None where missing), in epoch order
    epochs_done: int
    analysis: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.record.get("status"))

    @property
    def completed(self) -> bool:
        return self.record.get("status") == "completed"

    @property
    def data(self) -> str:
        return str(self.record.get("data"))

    @property
    def backbone(self) -> str:
        return str(self.record.get("backbone"))

    @property
    def attention(self) -> str:
        return str(self.record.get("attention"))

    @property
    def sparsity(self) -> float:
        value = self.record.get("sparsity")
        try:
            return float(value) if value is not None else 0.0
        except (TypeError, ValueError):
            return 0.0

    @property
    def seed(self):
        seed = self.record.get("seed")
        return seed if seed is not None else self.flat.get("seed")

    def value(self, key: str) -> Any:
        """A run-level value for filters and sorting: a record field, else a config key, else MISSING."""
        if key in RECORD_FIELDS:
            if key == "sparsity":
                return self.sparsity
            if key == "seed":
                return self.seed
            return self.record.get(key, MISSING)
        return self.flat.get(key, MISSING)

    def nam_weights_path(self) -> Path | None:
        folder = RunFolder(self.folder)
        for candidate in (folder.nam_weights, folder.analysis / NAM_WEIGHTS_FILE):  # train's, else analyze's
            if candidate.is_file():
                return candidate
        return None


def freeze(value: Any) -> Any:
    """A hashable form of a JSON value (lists become tuples, dicts sorted item tuples)."""
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    return value


def find_records(paths: Iterable[Path | str]) -> list[Path]:
    """Every record file below `paths` (a sweep folder, a run folder or a record file), deduplicated."""
    found: list[Path] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            found.append(Path(path))

    for raw in paths:
        path = os.fspath(raw)
        if os.path.isfile(path):
            add(path)  # a record file itself, whatever its name
            continue
        if not os.path.isdir(path):
            raise UserError(
                f"{path} does not exist: point compare at a run folder or a sweep folder (e.g. runs/multirun/...)"
            )
        for directory, _dirnames, filenames in _walk(path):
            if RECORD_FILE in filenames:
                add(os.path.join(directory, RECORD_FILE))
    return found


def _walk(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
    for directory, dirnames, filenames in os.walk(top):
        is_run = RECORD_FILE in filenames
        # Subfolders of a run folder never hold another run: not descended into (TensorBoard folders alone
        # can hold thousands of files). Hidden folders (.hydra, .git, ...) are skipped everywhere.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (is_run and d in RUN_SUBDIRS))
        yield directory, dirnames, filenames


def _read_json(path: str) -> Any:
    with open(path, "rb") as handle:
        return json.load(handle)


def load_record(path: Path | str) -> tuple[Run | None, str | None]:
    """Parse one record file; returns (run, None) or (None, a one-line warning)."""
    path = os.fspath(path)
    try:
        record = _read_json(path)
    except json.JSONDecodeError as exc:
        return None, f"skipping {path}: corrupt JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    except UnicodeDecodeError:
        return None, f"skipping {path}: not a UTF-8 JSON file"
    except OSError as exc:
        return None, f"skipping {path}: unreadable ({exc.strerror or exc})"
    if not isinstance(record, dict) or not isinstance(record.get("status"), str):
        return None, f"skipping {path}: not a namexp run record (no 'status' field)"
    epochs = record.pop("epochs", None)
    if not isinstance(epochs, list):
        epochs = []
    curve = [e.get("test_top1_err") if isinstance(e, dict) else None for e in epochs]
    config = record.get("config")
    flat = {key: freeze(value) for key, value in flatten(config).items()} if isinstance(config, dict) else {}
    if flat:
        flat = {key: freeze(value) for key, value in with_later_keys(flat).items()}
    folder = Path(os.path.dirname(os.path.abspath(path)))
    run = Run(folder=folder, record=record, flat=flat, curve=curve, epochs_done=len(epochs))
    return run, None


def load_analysis(run: Run) -> tuple[dict | None, str | None]:
    path = os.fspath(RunFolder(run.folder).analysis_record)
    try:
        analysis = _read_json(path)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"ignoring {path}: unreadable or corrupt ({exc.__class__.__name__})"
    if not isinstance(analysis, dict):
        return None, f"ignoring {path}: not a JSON object"
    return analysis, None


def load_runs(paths: Iterable[Path | str]) -> tuple[list[Run], list[str]]:
    """Load every run below `paths`. Returns (runs, warnings); raises UserError when there is none."""
    paths = list(paths)
    if not paths:
        raise UserError("no paths given: point compare at a run folder or a sweep folder (e.g. runs/multirun/...)")
    records = find_records(paths)
    shown = ", ".join(os.fspath(p) for p in paths)
    if not records:
        raise UserError(
            f"no runs found below {shown}: point compare at a run folder or a sweep folder (e.g. runs/multirun/...)"
        )
    runs: list[Run] = []
    warnings: list[str] = []
    for record_path in records:
        run, warning = load_record(record_path)
        if warning:
            warnings.append(warning)
        if run is None:
            continue
        fmt = run.record.get("format")
        if isinstance(fmt, int) and fmt > 1:
            warnings.append(
                f"{record_path}: record format {fmt} is newer than this namexp reads (1); reading it anyway"
            )
        run.analysis, warning = load_analysis(run)
        if warning:
            warnings.append(warning)
        runs.append(run)
    if not runs:
        raise UserError(
            f"no readable runs found below {shown} ({len(records)} record file(s), all unreadable): "
            "point compare at a run folder or a sweep folder (e.g. runs/multirun/...)"
        )
    return runs, warnings
