"""Files written whole: a temporary file beside the target, renamed over it only when complete, so a failed or
killed write leaves no half-written file and an older file of that name as it was. A write killed outright
(``kill -9``, a dead kernel) cannot remove its temporary file: a hidden ``.<name>.<random><suffix>`` beside the
target, which is safe to delete. Folders (`atomic_folder`) are filled beside their target and swapped in the same
way."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def file_mode(target: Path) -> int:
    """The mode a written file gets: the replaced file's, else what ``open`` would give (0o666 less the umask)."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        pass
    try:  # Linux names the umask here; reading it this way leaves it alone for other threads
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_file(target: Path, *, suffix: str | None = None, name: Path | None = None) -> Iterator[Path]:
    """A temporary path beside ``target`` (ending in ``suffix``, default target's) for the block to write.

    When the block ends without error the file gets a normal file's mode (`file_mode`; ``mkstemp`` makes it
    private) and replaces ``target``; on an error or Ctrl-C it is removed. A folder that refuses the file raises
    its ``OSError`` naming ``name`` (default ``target``), the file asked for, not the temporary one."""
    mode = file_mode(target)
    try:
        stem = target.stem.encode()[:180].decode(errors="ignore")  # a name near the 255-byte limit still fits
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=target.suffix if suffix is None else suffix,
                                   dir=target.parent)
    except OSError as err:
        raise type(err)(err.errno, f"cannot write {str(name or target)!r}: {err.strerror}") from err
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        try:
            os.replace(tmp, target)
        except OSError as err:  # (named as the file asked for, not the temporary one)
            raise type(err)(err.errno, f"cannot write {str(name or target)!r}: {err.strerror}") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


COMPLETE = ".complete"  # written last into a folder `atomic_folder` fills, before it is renamed into place


def _siblings(target: Path) -> tuple[Path, Path]:
    return target.with_name(target.name + ".partial"), target.with_name(target.name + ".old")


@contextlib.contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Write a folder (a training run's checkpoint or finished stage, a zarr trace) whole or not at all.

    The block fills a fresh ``<target>.partial``; when it ends without error the folder replaces ``target``
    (an older ``target`` is kept as ``<target>.old`` until the new one is in place). A run killed at any moment
    leaves ``target`` as it was, or the new one, never a mix: `recover_folder` (run first by the next write, and
    by `sora_nb.train.recover_folders` for a whole run) finishes a swap a kill cut short."""
    recover_folder(target)
    partial, old = _siblings(target)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:  # an error or Ctrl-C in the block: the old folder stays, the new one goes
        shutil.rmtree(partial, ignore_errors=True)
        raise
    (partial / COMPLETE).write_text("")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(partial, target)
    (target / COMPLETE).unlink()
    shutil.rmtree(old, ignore_errors=True)


def recover_folder(target: Path) -> None:
    """Finish or undo an `atomic_folder` swap a kill cut short: a complete ``.partial`` becomes ``target`` if it is
    missing, else the ``.old`` one comes back; incomplete leftovers go."""
    partial, old = _siblings(target)
    if not target.exists():
        if (partial / COMPLETE).is_file():
            os.replace(partial, target)
        elif old.is_dir():
            os.replace(old, target)
    (target / COMPLETE).unlink(missing_ok=True)
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def check_stored_tensors(path: Path, module: Any, *, tied: frozenset[str] = frozenset(),
                         error: type[Exception] = ValueError) -> None:
    """That the safetensors file ``path`` holds every parameter and buffer ``module`` has and nothing else (raises
    ``error`` naming them): diffusers and transformers leave a missing one at its random start and only log it.
    ``tied``: names of one tensor that the file may hold under any of them."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        stored = set(f.keys())
    want = set(module.state_dict())
    missing = sorted(want - stored - (tied if stored & tied else set()))
    unexpected = sorted(stored - want)
    if missing or unexpected:
        raise error(f"weights file {str(path)!r} does not fit its config: missing {missing[:3]}"
                    f"{' ...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}")
