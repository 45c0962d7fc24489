"""The demo's parts that need no database: bundled copies, sandbox playbooks, row diffs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.demo.render import row_changes
from bot.demo.story import DemoStateError, prepare_state, sandbox_playbooks
from bot.playbooks.loader import load_playbooks_strict

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bot" / "demo"


def test_bundled_copies_are_identical_to_the_top_level_files() -> None:
    """The demo runs from any directory on package files; they must not drift."""
    shipped = {p.name: p.read_bytes() for p in (ROOT / "playbooks").glob("*.yaml")}
    bundled = {p.name: p.read_bytes() for p in (BUNDLE / "playbooks").glob("*.yaml")}
    assert bundled == shipped
    assert (BUNDLE / "targets.sql").read_bytes() == (ROOT / "examples" / "targets.sql").read_bytes()
    assert (BUNDLE / "seed_incidents.json").read_bytes() == (
        ROOT / "examples" / "seed-incidents.json"
    ).read_bytes()


def test_sandbox_playbooks_are_auto_and_say_what_changed(tmp_path: Path) -> None:
    changes = sandbox_playbooks(tmp_path / "pb")
    playbooks = load_playbooks_strict(tmp_path / "pb")
    assert len(playbooks) == len(list((ROOT / "playbooks").glob("*.yaml")))
    assert {pb.guards.mode for pb in playbooks if pb.action.type != "notify_only"} == {"auto"}
    assert "api-release-integrity-hash-lock: min_idle_seconds 300 → 2 (no 5-minute wait)" in (
        changes
    )
    assert sum("mode shadow → auto" in c for c in changes) >= 6
    # The shipped files themselves are untouched (shadow stays the default).
    assert "mode: auto" not in (ROOT / "playbooks" / "bee42-requeue-stuck-tasks.yaml").read_text()


def test_prepare_state_never_deletes_a_file_that_is_not_a_demo_store(tmp_path: Path) -> None:
    target = tmp_path / "bot.db"
    target.write_text("precious")
    with pytest.raises(DemoStateError, match="not a demo state file"):
        prepare_state(target)
    assert target.read_text() == "precious"
    fresh = tmp_path / "new" / "demo.db"
    prepare_state(fresh)  # creates the directory, nothing to delete
    assert fresh.parent.is_dir() and not fresh.exists()


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ([], [], ["(no rows)"]),
        (
            [{"id": 1, "status": "running", "n": 0}, {"id": 2, "status": "done", "n": 0}],
            [{"id": 1, "status": "pending", "n": 1}, {"id": 2, "status": "done", "n": 0}],
            ["id=1: status running → pending, n 0 → 1", "(1 row(s) unchanged)"],
        ),
        ([{"pid": 7, "state": "idle"}], [], ["pid=7: pid=7, state=idle → gone"]),
        ([], [{"id": 3, "x": None}], ["id=3: (new) id=3, x=∅"]),
    ],
)
def test_row_changes(before: list, after: list, expected: list[str]) -> None:  # type: ignore[type-arg]
    assert row_changes(before, after) == expected
