"""redaction.py, the one place that decides what is secret: every secret variable, in every form
a URL carries one, is hidden by :func:`url` and scrubbed by :func:`scrub` (the exits themselves
are tested in tests/integration/test_secrets.py)."""

from __future__ import annotations

import pytest

from competition_pipeline import redaction
from competition_pipeline.store import dburl

SECRET = "s3cr#t-Pa55"
ENCODED = "s3cr%23t-Pa55"

#: (variable, value, the secret in it) for every secret variable and URL form.
CASES = [
    ("COMPETITION_DATABASE_URL", f"postgresql://alice:{ENCODED}@db:5432/c", SECRET),
    ("COMPETITION_DATABASE_URL", f"postgresql://alice@db:5432/c?password={ENCODED}", SECRET),
    ("COMPETITION_OWNER_DATABASE_URL", f"postgres://o:{ENCODED}@h1:5432,h2:5433/c", SECRET),
    (
        "DAGSTER_POSTGRES_URL",
        f"postgresql+psycopg2://d:{ENCODED}@h/dagster?sslmode=require",
        SECRET,
    ),
    ("DAGSTER_POSTGRES_URL", "postgresql://d:p@ss-Word9@h/dagster", "p@ss-Word9"),
    ("CELERY_BROKER_URL", f"amqp://competition:{ENCODED}@10.0.0.1:5672//", SECRET),
    ("NATS_URL", f"nats://fills:{ENCODED}@127.0.0.1:4222", SECRET),
    ("NATS_URL", f"tls://{ENCODED}@127.0.0.1:4222", SECRET),  # a token as the userinfo's user
    ("NATS_PASSWORD", SECRET, SECRET),
    ("NATS_TOKEN", SECRET, SECRET),
    ("SLACK_BOT_TOKEN", "xoxb-1234-abcd", "xoxb-1234-abcd"),
    ("ALERT_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/tOkEn123", "tOkEn123"),
    ("ALERT_WEBHOOK_URL", "hooks.slack.com/services/T0/B0/tOkEn123", "tOkEn123"),
]


@pytest.mark.parametrize(("variable", "value", "secret"), CASES)
def test_a_message_holding_the_secret_is_scrubbed(variable: str, value: str, secret) -> None:
    environ = {variable: value}
    for message in (f"cannot connect to {value}: refused", f"error '{value}'", value):
        shown = redaction.scrub(message, environ=environ)
        if secret is not None:
            assert secret not in shown and ENCODED not in shown, shown
        assert "***" in shown


@pytest.mark.parametrize(("variable", "value", "secret"), CASES)
def test_a_url_is_rendered_without_its_secret(variable: str, value: str, secret) -> None:
    if "://" not in value:
        return
    shown = redaction.url(value, webhook=variable == "ALERT_WEBHOOK_URL")
    if secret is not None:
        assert secret not in shown and ENCODED not in shown and "tOkEn" not in shown, shown


def test_database_urls_are_shown_by_dburl_with_the_query_password_hidden() -> None:
    url = f"postgresql://alice@db:5432/c?sslmode=require&password={ENCODED}"
    assert redaction.url(url) == dburl.redacted(url)
    assert dburl.redacted(url) == "postgresql://alice@db:5432/c?password=***&sslmode=require"
    assert dburl.password(url) == SECRET
    # Free text is masked in place (the parameters in their order), the URL rendered by dburl.
    shown = "postgresql://alice@db:5432/c?sslmode=require&password=***"
    assert redaction.scrub(f"at {url}", environ={}) == f"at {shown}"


def test_an_unencoded_at_is_refused_by_name_never_split_into_a_host() -> None:
    with pytest.raises(dburl.DatabaseUrlError, match="percent-encode it as %40") as raised:
        dburl.parse("postgresql://u:p@ss@host/db")
    assert "u:p@ss" not in str(raised.value)
    assert redaction.url("postgresql://u:p@ss@host/db") == "postgresql://u:***@host/db"


def test_short_secrets_are_hidden_in_urls_but_not_scrubbed_from_free_text() -> None:
    """Scrubbing a two-letter password from every message would garble them all."""
    assert redaction.url("nats://u:ab@h:4222") == "nats://u:***@h:4222"
    assert redaction.scrub("table ab", environ={"NATS_PASSWORD": "ab"}) == "table ab"
