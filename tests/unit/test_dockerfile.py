"""The Dockerfile keeps everything the bot writes under its data volume."""

from __future__ import annotations

import re
from pathlib import Path

from bot.settings import load_settings

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def _final_stage() -> str:
    return DOCKERFILE.read_text().split("\nFROM ")[-1]


def test_state_and_reports_live_on_the_data_volume() -> None:
    stage = _final_stage()
    [volume] = re.findall(r'VOLUME \["([^"]+)"\]', stage)
    env = dict(re.findall(r"(BOT_[A-Z_]+)=(\S+)", stage))
    settings = load_settings(environ=env)
    assert settings.database_url == f"sqlite:///{volume}/bot.db"
    assert settings.reports_dir is not None and str(settings.reports_dir).startswith(volume + "/")
    assert f"mkdir -p {settings.reports_dir}" in stage and f"chown -R bot {volume}" in stage


def test_the_healthcheck_comment_says_what_the_check_checks() -> None:
    stage = _final_stage()
    comment = stage[: stage.index("HEALTHCHECK")].rsplit("\n\n", 1)[-1].rsplit("VOLUME", 1)[1]
    command = stage[stage.index("HEALTHCHECK") :].split("\n", 2)[1]
    [endpoint] = re.findall(r"/healthz|/readyz", command) or ["health"]
    assert endpoint in comment
    assert "file" not in comment
