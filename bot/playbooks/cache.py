"""Playbooks parsed once per process, parsed again only when their files change.

Every cycle step needs the playbooks (the poll step to match, the lifecycle step for
quiet hours); parsing and validating every YAML file each time cost more than the rest
of a quiet cycle. :class:`PlaybookCache` keeps the last :class:`LoadResult` with a
fingerprint of the directory (each ``*.yaml``/``*.yml`` file's name, size, inode,
modification and change times in nanoseconds) and reloads when the fingerprint differs:
a file added, removed, renamed, edited or replaced. Reading the fingerprint costs one
``stat`` per file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from bot.playbooks.loader import LoadResult, load_playbooks

Fingerprint = tuple[str, tuple[tuple[str, int, int, int, int], ...]]


def fingerprint(directory: Path) -> Fingerprint:
    """What changes whenever :func:`load_playbooks` could read something different."""
    entries: list[tuple[str, int, int, int, int]] = []
    try:
        paths = sorted(directory.iterdir())
    except OSError:
        return (str(directory), ())
    for path in paths:
        if path.suffix not in (".yaml", ".yml"):
            continue
        try:
            st = path.stat()
        except OSError:
            continue  # removed between listing and stat: the next call sees it gone
        entries.append((path.name, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
    return (str(directory), tuple(entries))


class PlaybookCache:
    """The last load of one directory, reloaded when the directory's fingerprint moves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fingerprint: Fingerprint | None = None
        self._result: LoadResult | None = None
        self.loads = 0  # how many times the files were actually parsed

    def load(
        self, directory: Path, *, target_dialect: Callable[[str], str | None] | None = None
    ) -> tuple[LoadResult, bool]:
        """The playbooks of ``directory`` and whether they were (re)parsed now.

        ``target_dialect`` is passed to :func:`load_playbooks` when it parses; it must not
        change for the life of the cache (it comes from the process's settings)."""
        with self._lock:
            current = fingerprint(directory)
            if self._result is not None and current == self._fingerprint:
                return self._result, False
            self._result = load_playbooks(directory, target_dialect=target_dialect)
            self._fingerprint = current
            self.loads += 1
            return self._result, True
