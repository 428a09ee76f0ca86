"""Delivering alerts: the outbox's :class:`Alert`, and sending it to a webhook and to Slack.

At least once: an alert stays owed until every configured target has accepted it, and a target
that refuses is tried again after an exponential backoff (``ALERT_BACKOFF_SECONDS`` doubling per
attempt, at most 10 minutes). What to alert about, and the cursor that stores the outbox, are
``alerts.py``'s.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from competition_pipeline import redaction
from competition_pipeline.settings import AlertTargets

MAX_BACKOFF_SECONDS = 600.0


@dataclass
class Alert:
    id: str
    event: str
    summary: str
    windows: list[str]
    details: list[dict]
    created: float
    attempts: int = 0
    next_attempt: float = 0.0
    sent_to: list[str] = field(default_factory=list)
    last_error: str | None = None

    def payload(self) -> dict:
        return {
            k: getattr(self, k) for k in ("id", "event", "summary", "windows", "details", "created")
        }


def post_json(url: str, body: dict, timeout: float = 10.0) -> None:
    """POST to the webhook; any non-2xx or connection error raises (never naming the URL)."""
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError(
            f"ALERT_WEBHOOK_URL is not an http(s) URL ({redaction.url(url, webhook=True)})"
        )
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 (operator-configured URL)
        pass


def slack_sender(token: str, channel: str, api_url: str | None = None) -> Callable[[dict], None]:
    """Post an alert's summary to Slack through dagster-slack's client."""
    from dagster_slack import SlackResource

    client = SlackResource(token=token).get_client()
    if api_url:  # a Slack-compatible endpoint (and tests)
        client.base_url = api_url

    def send(body: dict) -> None:
        client.chat_postMessage(channel=channel, text=f":rotating_light: {body['summary']}")

    return send


def senders(targets: AlertTargets) -> dict[str, Callable[[dict], None]]:
    """One sender per configured target (none: the alerts are only logged)."""
    out: dict[str, Callable[[dict], None]] = {}
    if url := targets.webhook_url:
        out["webhook"] = lambda body: post_json(url, body)
    if targets.slack_bot_token and targets.slack_channel:
        out["slack"] = slack_sender(
            targets.slack_bot_token, targets.slack_channel, targets.slack_api_url
        )
    return out


def deliver(
    outbox: list[Alert],
    targets: dict[str, Callable[[dict], None]],
    now: float,
    backoff_seconds: float = 15.0,
) -> list[Alert]:
    """Send the due alerts to every target that has not accepted them yet and return the ones
    still owed, each with its backoff. A target that refuses is not tried again this tick."""
    down: set[str] = set()
    owed = []
    for alert in outbox:
        due = [t for t in targets if t not in alert.sent_to and t not in down]
        if alert.next_attempt <= now and due:
            for name in due:
                try:
                    targets[name](alert.payload())
                    alert.sent_to.append(name)
                except Exception as exc:  # noqa: BLE001 (any refusal: keep it, try again later)
                    down.add(name)
                    # Kept in the sensor's cursor (readable in the UI): never the webhook's URL
                    # (a malformed one is in urllib's message) nor a token.
                    error = redaction.scrub(f"{type(exc).__name__}: {exc}")
                    alert.last_error = f"{name}: {error}"[:500]
            if any(t not in alert.sent_to for t in targets):
                alert.attempts += 1
                alert.next_attempt = now + min(
                    backoff_seconds * 2 ** (alert.attempts - 1), MAX_BACKOFF_SECONDS
                )
        if any(t not in alert.sent_to for t in targets):
            owed.append(alert)
    return owed
