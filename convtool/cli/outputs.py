"""Every file a command writes: checked before any work, written all or nothing.

A command declares what it reads (:meth:`Outputs.read`) and what it will write
(:meth:`Outputs.write`), then calls :meth:`Outputs.check` before doing anything:

* an output that is an input (after resolving ``./``, ``..`` and symlinks, or the same file
  through a hard link) is refused: ``convert f.onnx --json f.onnx`` would replace the model
  with JSON;
* two outputs naming the same file (``-o g2.onnx --json g2.onnx``), or both naming stdout
  (``-``), are refused;
* every output's folder must exist and be writable, and the output must not be a folder -
  except a folder the command creates (:meth:`Outputs.folder`, e.g. ``sweep --out DIR``): no
  part of its path may be a file (``notes.txt/sub``) and its nearest existing parent must be
  a writable folder.  It is created only when the work is done (:meth:`Outputs.make_folders`,
  inside the transaction), so a failed run leaves no empty folder behind.

The work then runs inside :meth:`Outputs.transaction`: existing files about to be replaced
are kept (a hard link, else a copy) and, if anything fails - a later step, a write, Ctrl-C -
every file this run wrote is removed, every replaced file restored and every folder it
created removed, so a failed command leaves the disk as it found it.  Each write is itself atomic (temporary file + rename,
:mod:`convtool.graph.io`).

``-`` as a text output (``--json -``, ``--markdown -``) means stdout; the command then sends
its tables to stderr so stdout carries only the record.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import typer

from convtool.errors import OptionError

STDOUT = "-"


@dataclass(frozen=True)
class Target:
    """One output: the flag that asked for it and its path (``None``: stdout)."""

    flag: str
    path: Path | None
    sidecars: tuple[Path, ...] = ()  # files the write may add (a model's external data)

    @property
    def stdout(self) -> bool:
        return self.path is None

    def __str__(self) -> str:
        return "stdout" if self.path is None else str(self.path)


def _key(path: Path) -> Path:
    return Path(os.path.abspath(path.expanduser())).resolve()


def _same(a: Path, b: Path) -> bool:
    if _key(a) == _key(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


class Outputs:
    """The inputs and outputs of one command run (see the module docstring)."""

    def __init__(self) -> None:
        self.inputs: list[tuple[str, Path]] = []
        self.targets: list[Target] = []
        self.folders: list[tuple[str, Path]] = []
        self._created: list[Path] = []

    def folder(self, flag: str, path: Path) -> None:
        """``flag`` names a folder this command creates if needed (checked by :meth:`check`,
        created by :meth:`make_folders`); outputs may then be declared inside it."""
        self.folders.append((flag, Path(path)))

    def _pending(self, folder: Path) -> bool:
        """``folder`` does not exist yet but is (inside) a folder this command will create."""
        return not folder.exists() and any(_key(folder) == _key(f) or _key(f) in _key(folder).parents
                                           for _, f in self.folders)

    def make_folders(self) -> None:
        """Create the declared folders (and missing parents); a failed transaction removes them."""
        for _, folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)

    def read(self, what: str, path: Path | None) -> None:
        """``what`` (e.g. ``"the input model"``) is read from ``path``; no output may replace it."""
        if path is not None:
            self.inputs.append((what, Path(path)))

    def write(self, flag: str, path: Path | None, *, stdout: bool = True, sidecars: tuple[str, ...] = ()) -> Target | None:
        """``flag`` writes ``path`` (``-``: stdout when ``stdout``); ``None`` when not asked."""
        if path is None:
            return None
        if str(path) == STDOUT:
            if not stdout:
                raise OptionError(f"{flag} cannot write to stdout ('-'); give a file path")
            target = Target(flag, None)
        else:
            p = Path(path)
            target = Target(flag, p, tuple(p.with_name(p.name + s) for s in sidecars))
        self.targets.append(target)
        return target

    @property
    def to_stdout(self) -> bool:
        """Some output goes to stdout (so tables must not)."""
        return any(t.stdout for t in self.targets)

    def check(self) -> None:
        """Refuse collisions and unwritable outputs before any work (raises OptionError)."""
        for flag, folder in self.folders:
            self._check_folder(flag, folder)
            # missing now: whoever creates them during the work (this class or the library), a
            # failed transaction removes them again, deepest first, if the run left them empty
            self._created += [p for p in reversed((folder, *folder.parents)) if not p.exists()]
        for i, target in enumerate(self.targets):
            for other in self.targets[:i]:
                if target.stdout and other.stdout:
                    raise OptionError(f"{other.flag} and {target.flag} would both write to stdout ('-'); "
                                      "send one of them to a file")
                if target.path is not None and other.path is not None and any(
                        _same(a, b) for a in (target.path, *target.sidecars) for b in (other.path, *other.sidecars)):
                    raise OptionError(f"{other.flag} and {target.flag} would both write {target.path}; "
                                      "give them different paths")
            if target.path is None:
                continue
            for what, path in self.inputs:
                if any(_same(p, path) for p in (target.path, *target.sidecars)):
                    raise OptionError(f"refusing to overwrite {what} {path} with {target.flag}; "
                                      f"choose another path")
            self._check_writable(target)

    @staticmethod
    def _check_folder(flag: str, folder: Path) -> None:
        if folder.exists() and not folder.is_dir():
            raise OptionError(f"{flag} {folder} is a file, not a folder")
        parent = next((p for p in folder.parents if p.exists()), Path("."))
        if not folder.exists() and not parent.is_dir():
            raise OptionError(f"{flag} {folder}: {parent} is a file, not a folder")
        existing = folder if folder.exists() else parent
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OptionError(f"{flag}: cannot write into {existing} (permission denied)")

    def _check_writable(self, target: Target) -> None:
        path = target.path
        assert path is not None
        folder = path.parent if str(path.parent) else Path(".")
        if self._pending(folder):
            return  # created by make_folders, checked by _check_folder
        if not folder.is_dir():
            raise OptionError(f"{target.flag}: output folder {folder} does not exist")
        if path.is_dir():
            raise OptionError(f"{target.flag}: {path} is a folder; give a file path")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OptionError(f"{target.flag}: cannot write into {folder} (permission denied)")
        if path.exists() and not os.access(path, os.W_OK) and not os.access(folder, os.W_OK):
            raise OptionError(f"{target.flag}: cannot replace {path} (permission denied)")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the work; on any failure undo every file write (see the module docstring)."""
        files = [p for t in self.targets if t.path is not None for p in (t.path, *t.sidecars)]
        backups: dict[Path, Path | None] = {}
        try:
            for path in files:
                backups[path] = _backup(path) if path.exists() else None
            yield
        except BaseException:
            for path, backup in backups.items():
                with contextlib.suppress(OSError):
                    if backup is not None and path.exists() and os.path.samefile(backup, path):
                        backup.unlink()  # never replaced (rename() between two links of one file is a no-op)
                    elif backup is not None:
                        os.replace(backup, path)
                    elif path.exists():
                        path.unlink()
            for folder in reversed(self._created):  # deepest first; only if this run left it empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        else:
            for backup in backups.values():
                if backup is not None:
                    with contextlib.suppress(OSError):
                        backup.unlink()

    def write_text(self, target: Target | None, text: str) -> None:
        """Write ``text`` to ``target``'s file (atomically, permissions as for models) or stdout."""
        if target is None:
            return
        if target.path is None:
            typer.echo(text, nl=not text.endswith("\n"))
            return
        from convtool.graph.io import write_text_atomic

        write_text_atomic(text, target.path)

    def write_json(self, target: Target | None, data: dict) -> None:
        self.write_text(target, json.dumps(data, indent=2) + "\n")

    def written(self) -> list[str]:
        """The files written (for the closing line), stdout excluded."""
        return [str(t.path) for t in self.targets if t.path is not None]


def _backup(path: Path) -> Path:
    backup = path.with_name(f".{path.name}.convtool-backup-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        backup.unlink()
    try:
        os.link(path, backup)
    except OSError:
        shutil.copy2(path, backup)
    return backup
