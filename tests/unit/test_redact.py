"""DSN passwords are masked by pattern, so a DSN no parser accepts is masked too."""

from __future__ import annotations

import pytest

from bot.errors import StoreError
from bot.safety.redact import dsn_passwords, mask_dsn, scrub
from bot.store.db import Store, redact_url

MARK = "Mark3rPw"


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        (f"postgresql://bot:{MARK}@db:5432/jobs", "postgresql://bot:***@db:5432/jobs"),
        (f"postgresql://bot:p%zz{MARK}@db/jobs", "postgresql://bot:***@db/jobs"),  # bad escape
        (f"postgresql://bot:a@b/{MARK}@db/jobs?x=1", "postgresql://bot:***@db/jobs?x=1"),
        (f"mysql://root:{MARK}@127.0.0.1:3306/x", "mysql://root:***@127.0.0.1:3306/x"),
        (f"host=db user=bot password={MARK} dbname=x", "host=db user=bot password=*** dbname=x"),
        (f"host=db password='sp ace {MARK}'", "host=db password=***"),
        (
            f"postgresql://db/x?password={MARK}&sslmode=off",
            "postgresql://db/x?password=***&sslmode=off",
        ),
        ("postgresql://bot@db/jobs", "postgresql://bot@db/jobs"),
        ("sqlite:///state.db", "sqlite:///state.db"),
    ],
)
def test_mask_dsn_hides_the_password_of_valid_and_malformed_dsns(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked
    assert MARK not in mask_dsn(dsn)


def test_scrub_removes_every_form_of_the_password_from_a_driver_message() -> None:
    dsn = f"postgresql://bot:p%zz{MARK}%41@db/jobs"
    message = f'invalid percent-encoded token: "p%zz{MARK}%41", or p%zz{MARK}A decoded'
    assert MARK not in scrub(message, [dsn])
    assert f"p%zz{MARK}%41" in dsn_passwords(dsn)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://bot:{MARK}@127.0.0.1:notaport/db",
        f"postgresql://bot:{MARK}@[::1:5432/db",
        f"postgresql://bot:p%zz{MARK}@127.0.0.1:1/db",
    ],
)
def test_a_malformed_store_url_never_shows_its_password(url: str) -> None:
    assert MARK not in redact_url(url)
    try:
        Store(url).upgrade()
    except StoreError as exc:
        assert MARK not in str(exc)
    else:  # pragma: no cover - nothing listens on these
        pytest.fail("expected a StoreError")


def test_redact_url_does_not_split_a_password_at_its_first_at_sign() -> None:
    shown = redact_url(f"postgresql://bot:ab@{MARK}@127.0.0.1/db")
    assert MARK not in shown and shown.endswith("@127.0.0.1/db")
