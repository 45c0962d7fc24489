"""Playbooks are parsed once per process and again only when their files change."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bot.playbooks.cache import PlaybookCache

SHIPPED = Path(__file__).resolve().parents[2] / "playbooks"


def _copy(tmp_path: Path) -> Path:
    directory = tmp_path / "playbooks"
    shutil.copytree(SHIPPED, directory)
    return directory


def test_unchanged_files_are_parsed_once(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    cache = PlaybookCache()
    first, fresh = cache.load(directory)
    again, fresh_again = cache.load(directory)
    assert fresh and not fresh_again and again is first and cache.loads == 1
    assert first.playbooks and not first.errors


def test_an_edit_with_the_same_size_and_mtime_is_still_seen(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    cache = PlaybookCache()
    cache.load(directory)
    path = sorted(directory.glob("*.yaml"))[0]
    st = path.stat()
    text = path.read_text()
    # Same length (a space moved from the end to the first line), mtime restored: only
    # the change time (ctime) tells.
    assert text.endswith("\n")
    path.write_text(text.replace("\n", " \n", 1)[:-1])
    assert path.stat().st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    _, fresh = cache.load(directory)
    assert fresh and cache.loads == 2


def test_added_removed_and_broken_files_reload(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    cache = PlaybookCache()
    before, _ = cache.load(directory)
    (directory / "zz_broken.yaml").write_text("id: [unclosed\n")
    broken, fresh = cache.load(directory)
    assert fresh and broken.errors and len(broken.playbooks) == len(before.playbooks)
    (directory / "zz_broken.yaml").unlink()
    (directory / "notes.txt").write_text("not a playbook")  # ignored, like the loader does
    after, fresh = cache.load(directory)
    assert fresh and not after.errors
    assert not cache.load(directory)[1]


def test_a_missing_directory_is_an_error_until_it_appears(tmp_path: Path) -> None:
    cache = PlaybookCache()
    missing, _ = cache.load(tmp_path / "nowhere")
    assert missing.errors and not missing.playbooks
    shutil.copytree(SHIPPED, tmp_path / "nowhere")
    found, fresh = cache.load(tmp_path / "nowhere")
    assert fresh and found.playbooks
