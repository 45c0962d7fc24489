"""examples/config.yaml stays valid: settings and its triage block both load."""

from __future__ import annotations

from pathlib import Path

from bot.settings import load_settings
from bot.triage import TriageConfig

EXAMPLE = Path(__file__).parents[2] / "examples" / "config.yaml"


def test_the_example_config_loads_and_routes() -> None:
    settings = load_settings(EXAMPLE, environ={"SENTRY_ORG": "from-env"})
    assert settings.sentry_org == "from-env"  # the environment wins over the file
    assert settings.sentry_projects == ["queue-worker", "api", "worker"]
    assert settings.github_repos == ["acme/queue-worker", "acme/api"]
    triage = TriageConfig.model_validate(settings.triage)
    assert [rule.team for rule in triage.routing] == [
        "Payments",
        "Platform",
        "TorrentFlow On-call",
    ]
    assert triage.default_team == "On-call"
