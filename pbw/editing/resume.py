"""Runs of many edits that survive a kill: each finished request is saved as it finishes, atomically, and a
rerun of the same command skips what is saved (pbw-edit --requests and the experiment runner use this).

- `save_request(folder, result, unit)`: the result (`EditResult.save`) or failure and a `record.json`,
  written to a temporary folder and renamed into place, so a folder is either whole or absent.
- `saved_requests(folders)`: which of them are done. A request counts once its whole unit (the requests
  edited together, which finish together) is saved, so that a rerun edits every other request in the
  same company as one uninterrupted run.
- `claim(out, config, restart)`: a folder belongs to one configuration (`run.json`); a rerun with another
  is refused with the first differing field, unless `restart`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from pbw.editing.editor import EditFailure
from pbw.editing.result import EditResult

RECORD = "record.json"
RUN_FILE = "run.json"


class ConfigChangedError(ValueError):
    """A rerun into a folder that a run with another configuration started."""


def write_text_atomic(path: Path, text: str) -> None:
    """Write `path` through a temporary file and a rename: readers see the old or the new file, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_request(
    folder: Path,
    result: EditResult | EditFailure,
    unit: Sequence[str],
    write: Callable[[EditResult, Path], object] | None = None,
    **record,
) -> None:
    """Save one finished request into `folder` atomically: its result's files (`write(result, folder)`,
    default `EditResult.save`; nothing but the error for a failure) and record.json with `unit` (the
    folder names, siblings of `folder`, of the requests edited with it), the error (failures) and
    `record`'s other entries."""
    folder = Path(folder)
    for stale in folder.parent.glob(f".{folder.name}.tmp*"):  # left by a run that was stopped while saving
        shutil.rmtree(stale, ignore_errors=True)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    if isinstance(result, EditResult):
        (write or EditResult.save)(result, tmp)
        record["error"] = None
    else:
        tmp.mkdir(parents=True)
        record["error"] = result.error
    (tmp / RECORD).write_text(json.dumps({"unit": list(unit), **record}, indent=2))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def request_folders(out: Path) -> list[str]:
    """The names of the saved requests' folders directly in `out` (for a restart to delete)."""
    out = Path(out)
    return sorted(p.name for p in out.iterdir() if (p / RECORD).is_file()) if out.is_dir() else []


def read_record(folder: Path) -> dict | None:
    """A saved request's record, or None when the folder holds no whole saved request."""
    try:
        return json.loads((Path(folder) / RECORD).read_text())
    except (OSError, ValueError):
        return None


def saved_requests(folders: Sequence[Path]) -> dict[int, dict]:
    """Records of the requests (by index into `folders`) that are done: saved without an error, and every
    request of their unit saved too. Failures are not done (a rerun tries them again)."""
    records = {}
    for i, folder in enumerate(folders):
        record = read_record(folder)
        if record is None or record.get("error") or not record.get("unit"):
            continue
        mates = [read_record(Path(folder).parent / name) for name in record["unit"]]
        if all(m is not None and m.get("unit") == record["unit"] and not m.get("error") for m in mates):
            records[i] = record
    return records


def first_difference(before, now, path: str = "") -> str | None:
    """Where two JSON-like values first differ, as 'field: X before, Y now' (None: equal)."""
    if isinstance(before, dict) and isinstance(now, dict):
        for key in list(before) + [k for k in now if k not in before]:
            where = f"{path}.{key}" if path else str(key)
            if key not in before or key not in now:
                return f"{where}: {'absent' if key not in before else _show(before[key])} before, " + (
                    f"{'absent' if key not in now else _show(now[key])} now"
                )
            found = first_difference(before[key], now[key], where)
            if found:
                return found
        return None
    if isinstance(before, list) and isinstance(now, list) and len(before) == len(now):
        for i, (a, b) in enumerate(zip(before, now, strict=True)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if before == now else f"{path or 'the configuration'}: {_show(before)} before, {_show(now)} now"


def _show(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def claim(out: Path, config: dict, restart: bool, results: Sequence[str | Path]) -> None:
    """Make `out` the folder of a run of `config` (JSON-like). A folder a run with another configuration
    started is refused (`ConfigChangedError` naming the first differing field) unless `restart`, which
    deletes its saved `results` (paths under `out`) first; so does `restart` with the same one."""
    out = Path(out)
    file = out / RUN_FILE
    if file.is_file():
        try:
            before = json.loads(file.read_text())
        except ValueError:
            before = None
        diff = "run.json is unreadable" if before is None else first_difference(before, config)
        if diff and not restart:
            raise ConfigChangedError(
                f"{out} holds a run with another configuration ({diff}): give the same options to resume it, "
                "--restart to start it over, or another --out"
            )
    if restart:
        for name in results:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    write_text_atomic(file, json.dumps(config, indent=2))
