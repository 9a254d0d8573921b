"""Sign-in and sessions against the real service and Postgres: failed key checks are throttled
per client address and per key prefix and recover, every failure is audited without the key,
sign-out and key revocation end dashboard sessions in every process (two apps on one database
stand in for two workers), a revoked key fails at once on the API, and key creation and
revocation are audited."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from identity.settings import Settings
from services.app import create_app
from services.auth import KeyStore

from svc_helpers import assert_problem

BURST = 3


@pytest.fixture(scope="module")
def strict_settings(settings: Settings) -> Settings:
    # A tiny burst and a one-second refill, so the test sees the throttle engage and recover.
    return settings.model_copy(update={"auth_fail_burst": BURST, "auth_fail_per_minute": 60.0})


def started(settings: Settings, engine, analyzer) -> Iterator[FastAPI]:  # type: ignore[no-untyped-def]
    """A fresh app (so a fresh throttle) with its start-up run, as one worker process."""
    app = create_app(settings, engine=engine, analyzer=analyzer, warm_models=False)
    with TestClient(app):
        yield app


@pytest.fixture
def app(strict_settings: Settings, engine, analyzer) -> Iterator[FastAPI]:  # type: ignore[no-untyped-def]
    yield from started(strict_settings, engine, analyzer)


def client_at(app: FastAPI, address: str) -> TestClient:
    """A client connecting from ``address`` (not a context manager: the app is started once)."""
    return TestClient(app, client=(address, 40000))


@pytest.fixture
def web(app: FastAPI) -> TestClient:
    return client_at(app, "10.1.0.1")


def events_since(store, first_id: int) -> list[dict]:  # type: ignore[no-untyped-def]
    return [e for e in store.audit_events(500) if e["id"] > first_id]


def last_event_id(store) -> int:  # type: ignore[no-untyped-def]
    events = store.audit_events(1)
    return events[0]["id"] if events else 0


def sign_in(c: TestClient, key: str) -> object:
    page = c.get("/admin/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    return c.post(
        "/admin/login",
        data={"api_key": key, "login_token": token, "next": ""},
        follow_redirects=False,
    )


def csrf_of(page_html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page_html).group(1)  # type: ignore[union-attr]


def test_api_throttle_per_client_engages_and_recovers(app: FastAPI, keys: KeyStore, store) -> None:  # type: ignore[no-untyped-def]
    good, _ = keys.create("admin", name="throttle")
    wrong = "idk_" + "W" * 43
    start = last_event_id(store)
    c = client_at(app, "10.9.0.1")
    for _ in range(BURST):
        assert_problem(c.get("/v1/collections", headers={"X-API-Key": wrong}), 401, "unauthorized")
    r = c.get("/v1/collections", headers={"X-API-Key": good})  # even the right key waits
    err = assert_problem(r, 429, "too_many_attempts")
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= 2 and err["details"]["retry_after_s"] == retry
    # another client is not held back by this one
    assert (
        client_at(app, "10.9.0.2").get("/v1/collections", headers={"X-API-Key": good}).status_code
        == 200
    )
    time.sleep(retry + 0.2)  # the refill the setting promises, not a speed measurement
    assert c.get("/v1/collections", headers={"X-API-Key": good}).status_code == 200
    events = events_since(store, start)
    refused = [e for e in events if e["action"] == "auth.refused"]
    assert [e["outcome"] for e in refused].count("refused") == BURST
    assert [e["outcome"] for e in refused].count("throttled") == 1
    assert all(e["details"]["client"] == "10.9.0.1" for e in refused)
    assert wrong[:12] not in str(events) and "W" * 20 not in str(events)


def test_throttle_per_key_prefix_across_clients(app: FastAPI, keys: KeyStore, store) -> None:  # type: ignore[no-untyped-def]
    target, row = keys.create("verify", name="targeted")
    other, _ = keys.create("admin", name="bystander")
    guess = target[:12] + "x" * (len(target) - 12)  # the public prefix, a wrong secret
    start = last_event_id(store)
    for i in range(BURST):  # one guess from each of several addresses
        c = client_at(app, f"10.8.0.{i}")
        assert_problem(c.get("/v1/collections", headers={"X-API-Key": guess}), 401)
    fresh = client_at(app, "10.8.1.1")
    r = fresh.get("/v1/collections", headers={"X-API-Key": guess})
    assert_problem(r, 429, "too_many_attempts")
    assert int(r.headers["Retry-After"]) >= 1
    # a different key from the same fresh client is untouched
    assert fresh.get("/v1/collections", headers={"X-API-Key": other}).status_code == 200
    refused = [e for e in events_since(store, start) if e["outcome"] == "refused"]
    # the audit names the key that was aimed at (its id), never what was sent
    assert len(refused) == BURST and {e["details"]["key_id"] for e in refused} == {row["id"]}


def test_dashboard_sign_in_throttle_message_and_audit(app: FastAPI, keys: KeyStore, store) -> None:  # type: ignore[no-untyped-def]
    good, _ = keys.create("admin", name="dash throttle")
    start = last_event_id(store)
    c = client_at(app, "10.7.0.1")
    for _ in range(BURST):
        r = sign_in(c, "idk_" + "q" * 43)
        assert r.status_code == 401 and "not valid" in r.text  # type: ignore[attr-defined]
    r = sign_in(c, good)
    assert r.status_code == 429  # type: ignore[attr-defined]
    assert "Too many failed sign-ins" in r.text and "try again" in r.text  # type: ignore[attr-defined]
    retry = int(r.headers["Retry-After"])  # type: ignore[attr-defined]
    assert retry >= 1 and "identity_admin" not in c.cookies
    time.sleep(retry + 0.2)
    r = sign_in(c, good)
    assert r.status_code == 303 and r.headers["location"] == "/admin/collections"  # type: ignore[attr-defined]
    events = events_since(store, start)
    logins = [
        (e["outcome"], e["details"].get("reason")) for e in events if e["action"] == "admin.login"
    ]
    assert logins.count(("refused", "wrong_key")) == BURST
    assert ("throttled", None) in logins and logins[0] == ("ok", None)  # newest first
    assert "q" * 20 not in str(events)


def test_sign_out_ends_the_session_in_every_worker(
    app: FastAPI,
    strict_settings: Settings,
    engine,
    analyzer,
    keys: KeyStore,  # type: ignore[no-untyped-def]
) -> None:
    key, row = keys.create("admin", name="sign-out")
    for other_worker in started(strict_settings, engine, analyzer):
        a, b = client_at(app, "10.6.0.1"), client_at(other_worker, "10.6.0.1")
        assert sign_in(a, key).status_code == 303  # type: ignore[attr-defined]
        cookie = a.cookies["identity_admin"]
        page = a.get("/admin/collections", follow_redirects=False)
        assert page.status_code == 200
        b.cookies.set("identity_admin", cookie)  # a copy of the cookie, used elsewhere
        assert b.get("/admin/collections", follow_redirects=False).status_code == 200
        r = a.post("/admin/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
        assert r.status_code == 303
        # the old cookie, replayed on either worker, is refused
        a.cookies.set("identity_admin", cookie)
        for c in (a, b):
            r = c.get("/admin/collections", follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"].startswith("/admin/login")
    with engine.connect() as conn:
        ended = conn.execute(
            text("SELECT count(*) FROM admin_sessions WHERE key_id = :k AND ended_at IS NOT NULL"),
            {"k": row["id"]},
        ).scalar_one()
    assert ended == 1


def test_revoking_a_key_ends_its_sessions_and_api_use_and_is_audited(
    app: FastAPI,
    keys: KeyStore,
    store,
    web: TestClient,  # type: ignore[no-untyped-def]
) -> None:
    start = last_event_id(store)
    key, row = keys.create("admin", name="to revoke")
    assert sign_in(web, key).status_code == 303  # type: ignore[attr-defined]
    assert web.get("/admin/collections", follow_redirects=False).status_code == 200
    assert web.get("/v1/collections", headers={"X-API-Key": key}).status_code == 200
    keys.revoke(row["prefix"], actor=None)  # as `identity keys revoke` does
    r = web.get("/admin/collections", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/admin/login")
    assert_problem(web.get("/v1/collections", headers={"X-API-Key": key}), 401, "unauthorized")
    events = events_since(store, start)
    created = [e for e in events if e["action"] == "key.create"]
    revoked = [e for e in events if e["action"] == "key.revoke"]
    assert created and created[0]["details"]["key_id"] == row["id"]
    assert created[0]["details"]["scope"] == "admin" and created[0]["actor_key_id"] is None
    assert len(revoked) == 1 and revoked[0]["details"]["prefix"] == row["prefix"]
    assert key not in str(events) and key[12:] not in str(events)
