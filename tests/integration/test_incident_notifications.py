"""Incident events to PagerDuty's Events API v2 and a signed webhook, over real HTTP to local servers that
validate them as the receivers do, with the store on SQLite and the real PostgreSQL: the lifecycle in order,
an outage then recovery, 429 and 400, no event sent twice (two senders at once included), and the sweep's
wiring."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from connectors.paging import SignedWebhook
from domain import IncidentStatus
from gpuops.config import Settings
from gpuops.incident_notifications import Change, IncidentNotifications, channels_from, dedup_key, pagerduty_event
from gpuops.pipeline import OrderedDispatcher, Pipeline
from gpuops.store import migrate
from gpuops.store.models import Incident, NotificationOutbox
from gpuops.wiring import Container, bootstrap
from tests.paging_servers import ROUTING_KEY, Servers, pagerduty_problems, paging_servers

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class World:
    container: Container
    servers: Servers
    clock: Clock
    notifications: IncidentNotifications

    def sender(self) -> IncidentNotifications:
        """Another process's sender over the same store and receivers."""
        s = self.container.settings
        return IncidentNotifications(uow=self.container.uow, settings=s, channels=channels_from(s), clock=self.clock)


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    migrate.upgrade(db_url)
    with paging_servers() as servers:
        settings = Settings.model_validate({"database_url": db_url, "dashboard_url": "https://gpuops.example.com/",
                                            "installation": "lab-a", "notify_timeout_seconds": 2, **servers.env})
        container = bootstrap(settings)
        clock = Clock()
        notifications = IncidentNotifications(uow=container.uow, settings=settings, channels=channels_from(settings),
                                              clock=clock)
        try:
            yield World(container, servers, clock, notifications)
        finally:
            container.close()


def open_incident(container: Container, *, severity: str = "critical", title: str = "DBE on GPU 3",
                  hostname: str | None = "gpu-node-001", gpu: int | None = 3) -> int:
    with container.uow() as uow:
        incident = Incident(dedup_key=f"{hostname}/{gpu}/ecc", scope="gpu" if gpu is not None else "node",
                            family="ecc", hostname=hostname, gpu=gpu, severity=severity, title=title,
                            summary="double-bit ECC errors", opened_at=T0, updated_at=T0)
        uow.session.add(incident)
        uow.commit()
        return incident.id


def change(container: Container, incident_id: int, **fields: object) -> None:
    with container.uow() as uow:
        incident = uow.session.get(Incident, incident_id)
        assert incident is not None
        for name, value in fields.items():
            setattr(incident, name, value)
        uow.commit()


def outbox(container: Container) -> list[tuple[str, str, str, int]]:
    with container.uow() as uow:
        rows = uow.session.scalars(select(NotificationOutbox).order_by(NotificationOutbox.id))
        return [(r.channel, r.event, r.status, r.attempts) for r in rows]


def test_a_trigger_carries_what_pagerduty_and_the_webhook_receiver_check(world: World) -> None:
    incident_id = open_incident(world.container, title="DBE on GPU 3 " + "x" * 280)
    outcome = world.notifications.run()
    assert (outcome.queued, outcome.sent, outcome.failed) == (2, 2, 0)
    pd, hook = world.servers.pagerduty, world.servers.webhook
    assert pd.rejected == [] and hook.rejected == []
    [event] = pd.accepted
    key = dedup_key("lab-a", incident_id)
    assert key == f"lab-a-incident-{incident_id}"
    assert (event["event_action"], event["dedup_key"], event["routing_key"]) == ("trigger", key, ROUTING_KEY)
    payload = event["payload"]
    assert payload["summary"] == f"DBE on GPU 3 {'x' * 280} (gpu-node-001 GPU 3)"
    assert (payload["source"], payload["severity"], payload["component"]) == ("gpu-node-001", "critical", "GPU 3")
    assert (payload["group"], payload["class"]) == ("lab-a", "ecc")
    assert datetime.fromisoformat(payload["timestamp"]) == T0
    assert payload["custom_details"]["incident_id"] == incident_id
    url = f"https://gpuops.example.com/incidents/{incident_id}"
    assert event["links"] == [{"href": url, "text": f"gpuops incident {incident_id}"}]
    [body] = hook.accepted
    assert (body["event"], body["reason"], body["dedup_key"]) == ("trigger", "opened", key)
    assert body["incident"]["url"] == url and body["incident"]["severity"] == "critical"
    with world.container.uow() as uow:
        stored = uow.session.scalars(select(NotificationOutbox.body)).all()
    assert all(ROUTING_KEY not in str(b) for b in stored)  # the key is added when sent, never stored


def test_a_summary_is_cut_to_pagerdutys_limit() -> None:
    incident = Incident(id=7, scope="node", family="xid", hostname="h" * 253, gpu=None, severity="info",
                        title="T" * 2000, summary="", occurrences=1, opened_at=T0, status=IncidentStatus.OPEN)
    settings = Settings()
    event = pagerduty_event(incident, Change("trigger", "opened"), settings=settings, now=T0)
    assert len(event["payload"]["summary"]) == 1024
    assert "component" not in event["payload"] and "links" not in event  # no GPU, no dashboard URL
    assert pagerduty_problems({**event, "routing_key": ROUTING_KEY}) == []
    assert pagerduty_event(incident, Change("resolve", "resolved"), settings=settings, now=T0) == {
        "event_action": "resolve", "dedup_key": "gpuops-incident-7"}


def test_lifecycle_goes_out_in_order_once(world: World) -> None:
    incident_id = open_incident(world.container)
    key = dedup_key("lab-a", incident_id)
    world.notifications.run()
    change(world.container, incident_id, acknowledged_at=T0 + timedelta(minutes=3), acknowledged_by="alice")
    world.notifications.run()
    world.notifications.run()  # nothing new: nothing queued, nothing sent
    change(world.container, incident_id, status=IncidentStatus.RESOLVED, resolved_at=T0 + timedelta(minutes=9))
    world.notifications.run()
    world.notifications.run()
    assert world.servers.pagerduty.actions() == [(key, "trigger"), (key, "acknowledge"), (key, "resolve")]
    assert world.servers.webhook.actions("event") == [(key, "trigger"), (key, "acknowledge"), (key, "resolve")]
    assert len(set(world.servers.webhook.deliveries)) == 3


def test_escalation_retriggers_louder_and_a_reopened_incident_triggers_again(world: World) -> None:
    incident_id = open_incident(world.container, severity="warning")
    world.notifications.run()
    change(world.container, incident_id, status=IncidentStatus.ESCALATED)
    world.notifications.run()
    change(world.container, incident_id, status=IncidentStatus.RESOLVED)
    world.notifications.run()
    change(world.container, incident_id, status=IncidentStatus.OPEN, resolved_at=None)
    world.notifications.run()
    events = world.servers.pagerduty.accepted
    assert [e["event_action"] for e in events] == ["trigger", "trigger", "resolve", "trigger"]
    assert [e["payload"]["severity"] for e in events if e["event_action"] == "trigger"] == [
        "warning", "error", "warning"]
    assert events[1]["payload"]["summary"].startswith("Escalated: ")
    assert [b["reason"] for b in world.servers.webhook.accepted] == ["opened", "escalated", "resolved", "reopened"]


def test_severity_threshold_and_what_closed_before_it_was_told(world: World) -> None:
    info = open_incident(world.container, severity="info", hostname="gpu-node-002")
    gone = open_incident(world.container, severity="critical", hostname="gpu-node-003")
    change(world.container, gone, status=IncidentStatus.RESOLVED)
    assert world.notifications.run().queued == 0
    change(world.container, info, status=IncidentStatus.ESCALATED)  # a human is needed: sent whatever severity
    world.notifications.run()
    assert world.servers.pagerduty.actions() == [(dedup_key("lab-a", info), "trigger")]


def test_outage_then_recovery_sends_everything_once_in_order(world: World) -> None:
    servers = world.servers
    incident_id = open_incident(world.container)
    key = dedup_key("lab-a", incident_id)
    servers.pagerduty_server.stop()
    servers.webhook_server.stop()
    assert world.notifications.run().sent == 0
    assert outbox(world.container) == [("pagerduty", "trigger", "pending", 1), ("webhook", "trigger", "pending", 1)]
    change(world.container, incident_id, acknowledged_at=T0 + timedelta(minutes=1), acknowledged_by="bob")
    world.clock.advance(1)
    world.notifications.run()  # queued behind the trigger; the trigger's back-off (2 s) is not over
    change(world.container, incident_id, status=IncidentStatus.RESOLVED)
    world.notifications.run()
    assert [r[3] for r in outbox(world.container)] == [1, 1, 0, 0, 0, 0]
    world.clock.advance(1)
    world.notifications.run()  # still down: the trigger waits longer, the others still behind it
    assert [(r[1], r[3]) for r in outbox(world.container) if r[0] == "pagerduty"] == [
        ("trigger", 2), ("acknowledge", 0), ("resolve", 0)]
    servers.pagerduty_server.start()
    servers.webhook_server.start()
    world.clock.advance(3)
    assert world.notifications.run().sent == 0  # back-off after the second failure is 4 s
    world.clock.advance(1)
    assert world.notifications.run().sent == 6
    assert servers.pagerduty.actions() == [(key, "trigger"), (key, "acknowledge"), (key, "resolve")]
    assert servers.webhook.actions("event") == [(key, "trigger"), (key, "acknowledge"), (key, "resolve")]
    assert {r[2] for r in outbox(world.container)} == {"sent"}


def test_429_waits_its_retry_after_and_5xx_backs_off(world: World) -> None:
    servers = world.servers
    servers.pagerduty.failures = [429]
    servers.pagerduty.retry_after = "30"
    servers.webhook.failures = [503]
    open_incident(world.container)
    world.notifications.run()
    assert servers.pagerduty.accepted == [] and servers.webhook.accepted == []
    with world.container.uow() as uow:
        rows = {r.channel: r for r in uow.session.scalars(select(NotificationOutbox))}
        assert rows["pagerduty"].next_attempt_at == T0 + timedelta(seconds=30)
        assert "429" in (rows["pagerduty"].last_error or "")
        assert rows["webhook"].next_attempt_at == T0 + timedelta(seconds=2)
    world.clock.advance(2)
    world.notifications.run()
    assert len(servers.webhook.accepted) == 1 and servers.pagerduty.accepted == []
    world.clock.advance(28)
    world.notifications.run()
    assert len(servers.pagerduty.accepted) == 1
    assert servers.pagerduty.requests == 2


def test_a_400_is_recorded_with_pagerdutys_message_and_later_events_still_go(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    s = world.container.settings
    wrong = s.model_copy(update={"pagerduty_routing_key": s.webhook_secret, "webhook_url": None})
    sender = IncidentNotifications(uow=world.container.uow, settings=wrong, channels=channels_from(wrong),
                                   clock=world.clock)
    incident_id = open_incident(world.container)
    with caplog.at_level(logging.ERROR, logger="gpuops.incident_notifications"):
        outcome = sender.run()
    assert (outcome.sent, outcome.failed) == (0, 1)
    with world.container.uow() as uow:
        row = uow.session.scalars(select(NotificationOutbox)).one()
        assert row.status == "failed"
        assert "400" in (row.last_error or "") and "Event object is invalid" in (row.last_error or "")
        assert "'routing_key' is invalid" in (row.last_error or "")
    assert any("refused" in r.message for r in caplog.records)
    change(world.container, incident_id, status=IncidentStatus.RESOLVED)
    world.clock.advance(600)
    sender.run()
    assert [r[1:3] for r in outbox(world.container)] == [("trigger", "failed"), ("resolve", "failed")]
    assert len(world.servers.pagerduty.rejected) == 2  # tried once each, never retried


def test_a_webhook_signed_with_another_secret_is_refused(world: World) -> None:
    s = world.container.settings
    assert s.webhook_url is not None
    impostor = SignedWebhook(url=s.webhook_url, secret="not-the-shared-secret-at-all")
    sender = IncidentNotifications(uow=world.container.uow, settings=s, channels=[impostor], clock=world.clock)
    open_incident(world.container)
    assert sender.run().failed == 1
    assert world.servers.webhook.accepted == []
    assert world.servers.webhook.rejected[0]["errors"] == ["bad signature"]
    impostor.close()


def test_two_senders_at_once_send_each_event_once(world: World) -> None:
    ids = [open_incident(world.container, hostname=f"gpu-node-{n:03d}") for n in range(1, 9)]
    senders = [world.notifications, world.sender(), world.sender()]
    barrier = threading.Barrier(len(senders))
    errors: list[BaseException] = []

    def run(sender: IncidentNotifications) -> None:
        try:
            barrier.wait()
            sender.run()
            sender.run()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    world.notifications.run()  # whatever a lost race left behind
    expected = sorted((dedup_key("lab-a", i), "trigger") for i in ids)
    assert sorted(world.servers.pagerduty.actions()) == expected
    assert sorted(world.servers.webhook.actions("event")) == expected
    assert len(outbox(world.container)) == 2 * len(ids)


def test_the_sweep_reconciles_and_delivers(db_url: str) -> None:
    migrate.upgrade(db_url)
    with paging_servers() as servers:
        container = bootstrap(Settings.model_validate({"database_url": db_url, **servers.env}))
        try:
            incident_id = open_incident(container)
            Pipeline(container, OrderedDispatcher(lambda: 0.0)).sweep()
            assert servers.pagerduty.actions() == [(dedup_key("gpuops", incident_id), "trigger")]
            assert len(servers.webhook.accepted) == 1
        finally:
            container.close()


def test_nothing_configured_is_a_no_op(container: Container) -> None:
    open_incident(container)
    assert container.incident_notifications.channels == []
    assert container.incident_notifications.run().queued == 0
    assert outbox(container) == []
