"""Webhooks and the change feed, in process: the backoff schedule at an explicit `now`, host
patterns and addresses, the cursor codec, the settings, the change log and outbox as storage
writes them (temp SQLite), the signature a receiver checks, and the HTTP refusals (falcon.testing)."""
from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta

import pytest
from pony.orm import db_session, select
from standardwebhooks import Webhook

from actors.server import webhook_post
from conf import pinned_http, webhook_hosts
from conf.settings import ConfigError, load_server_config
from storage import changes, clock, feed_cursors, jobs, webhooks
from storage.models import JobChange, WebhookDelivery
from storage.states import JobState
from tests.harness import RUN, make_server, webhook_secret

T0 = datetime(2026, 11, 30, 8, 0, 0)
# NOTE: fixed, not drawn: it appears in parametrized test ids, which must be the same in every xdist worker.
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


# --- backoff ------------------------------------------------------------------------------------

def test_retries_wait_twice_as_long_each_time_up_to_an_hour_and_stop_after_the_retry_period():
    waits = [webhooks.next_attempt(T0, attempt, T0, 10.0, 24.0) - T0 for attempt in range(1, 11)]
    assert [w.total_seconds() for w in waits] == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]
    assert webhooks.next_attempt(T0, 50, T0 + timedelta(hours=23, minutes=30), 10.0, 24.0) is None
    assert webhooks.next_attempt(T0, 1, T0 + timedelta(hours=23, minutes=59), 10.0, 24.0) == \
        T0 + timedelta(hours=23, minutes=59, seconds=10)


# --- host patterns and addresses -------------------------------------------------------------------

PATTERNS = webhook_hosts.parse_patterns("*.wenmr.eu, portal.example.org:8443, 127.0.0.1:8080")


@pytest.mark.parametrize("url, admitted", [
    ("https://a.wenmr.eu/hook", (True, False)),
    ("https://a.b.wenmr.eu:9000/hook", (True, False)),
    ("https://wenmr.eu/hook", (False, False)),
    ("https://evilwenmr.eu/hook", (False, False)),
    ("https://portal.example.org:8443/x", (True, True)),
    ("https://portal.example.org/x", (False, False)),
    ("http://127.0.0.1:8080/x", (True, True)),
    ("http://127.0.0.1:8081/x", (False, False)),
])
def test_a_url_is_admitted_by_a_pattern_of_its_host_and_port(url, admitted):
    assert webhook_hosts.admitted(url, PATTERNS) == admitted


@pytest.mark.parametrize("url, words", [
    ("https://a.wenmr.eu/hook", None),
    ("https://127.0.0.1.wenmr.eu/hook", None),  # a name: its addresses are checked at each delivery
    ("http://127.0.0.1:8080/x", None),  # loopback, listed exactly
    ("http://user:pw@a.wenmr.eu/x", "without credentials"),
    ("file:///etc/passwd", "http(s)://host"),
    ("https://example.com/x", "accepted: *.wenmr.eu"),
    ("https://a.wenmr.eu/" + "x" * 2100, "at most 2000 characters"),
    ("http://\u0436.wenmr.eu/hook", "its host in ASCII"),  # review item 1: it failed at every delivery
])
def test_an_upload_callback_url_is_refused_saying_why(url, words):
    why = webhook_hosts.refusal(url, PATTERNS)
    assert (why is None) if words is None else (words in why)


def test_a_wildcard_never_reaches_a_loopback_link_local_or_private_address_an_exact_listing_may():
    for address in ("127.0.0.1", "169.254.169.254", "10.1.2.3", "192.168.0.1", "::1", "fe80::1",
                    "::ffff:127.0.0.1", "0.0.0.0", "224.0.0.1"):
        assert not webhook_hosts.address_allowed(address, listed_exactly=False), address
        assert webhook_hosts.address_allowed(address, listed_exactly=True), address
    assert webhook_hosts.address_allowed("145.100.1.1", listed_exactly=False)
    assert "loopback" in webhook_hosts.refusal("http://127.0.0.1/x", webhook_hosts.parse_patterns("*.0.0.1"))
    assert webhook_hosts.refusal("http://[::1]:1/x", webhook_hosts.parse_patterns("[::1]:1")) is None


def test_with_no_patterns_webhooks_are_off_and_any_callback_url_is_refused():
    assert "webhooks are off" in webhook_hosts.refusal("https://a.wenmr.eu/hook", ())


def test_at_delivery_a_name_resolving_to_a_loopback_address_through_a_wildcard_is_refused(monkeypatch):
    monkeypatch.setattr(pinned_http.socket, "getaddrinfo", lambda *a, **k: [(2, 1, 6, "", ("127.0.0.1", 443))])
    with pytest.raises(ValueError, match="resolves to a non-global address 127.0.0.1"):
        pinned_http.checked_address("https://rebound.wenmr.eu/hook", PATTERNS, "[server] webhook_hosts")


def test_https_to_a_checked_address_keeps_the_hosts_name_for_tls_and_its_certificate():
    adapter = pinned_http.PinnedTLS("a.wenmr.eu")
    pool = adapter.poolmanager.connection_pool_kw
    assert (pool["server_hostname"], pool["assert_hostname"]) == ("a.wenmr.eu", "a.wenmr.eu")


# --- the cursor -----------------------------------------------------------------------------------

@pytest.mark.parametrize("seq", [0, 1, 41, 2**63 - 1])
def test_a_cursor_names_its_position_and_nothing_else(clean_database, seq):
    assert feed_cursors.unseal(feed_cursors.seal(seq)) == seq


def test_a_cursor_hides_its_position_so_two_tell_nothing_of_other_portals_changes(clean_database):
    """Review item 2: `c<number>` cursors counted every portal's changes."""
    one, two, again = feed_cursors.seal(41), feed_cursors.seal(42), feed_cursors.seal(41)
    assert re.fullmatch(feed_cursors.PATTERN, one) and one != again and "41" not in one
    assert sum(a != b for a, b in zip(one, two)) > 20  # nothing in common but the length


def forged(cursor: str) -> str:
    flipped = "A" if cursor[10] != "A" else "B"
    return cursor[:10] + flipped + cursor[11:]


@pytest.mark.parametrize("cursor", ["", "garbage", "c12", "c0", "c" + "9" * 19, "\u0665" * 38, "A" * 38, "A" * 39,
                                    "x" * 38 + "=="])
def test_a_cursor_the_server_did_not_give_is_refused(clean_database, cursor):
    with pytest.raises(ValueError):
        feed_cursors.unseal(cursor)


def test_a_cursor_changed_by_one_character_is_refused(clean_database):
    with pytest.raises(ValueError):
        feed_cursors.unseal(forged(feed_cursors.seal(7)))


def test_the_cursor_key_is_stored_once_and_read_back_by_every_process(clean_database, monkeypatch):
    monkeypatch.setattr(feed_cursors, "_key", None)
    cursor = feed_cursors.seal(5)
    monkeypatch.setattr(feed_cursors, "_key", None)  # as a new process, or the server restarted
    assert feed_cursors.unseal(cursor) == 5


# --- settings ---------------------------------------------------------------------------------------

def server_ini(tmp_path, server: str, extra: str = "") -> str:
    path = tmp_path / "server.ini"
    path.write_text(f"[server]\n{server}\n[service.example]\nclients = http://h:1\n{extra}")
    return str(path)


def test_the_webhook_keys_are_read_and_a_portal_without_its_own_secret_uses_the_default(tmp_path):
    config = load_server_config(server_ini(
        tmp_path, "webhook_hosts = *.wenmr.eu, Portal.Example.org:8443\nwebhook_retry_hours = 2\n"
                  "webhook_backoff_seconds = 1.5\nwebhook_timeout = 3\ncluster_secret = cluster-secret-0123456789",
        f"[tokens]\nalpha = alpha-token-0123456789ab\nbeta = beta-token-0123456789abc\n"
        f"[webhooks]\nalpha = {SECRET}\ndefault = {webhook_secret()}\n"))
    assert config.webhook_hosts == ("*.wenmr.eu", "portal.example.org:8443")
    assert (config.webhook_retry_hours, config.webhook_backoff_seconds, config.webhook_timeout) == (2, 1.5, 3)
    assert config.webhook_secret("alpha") == SECRET
    assert config.webhook_secret("beta") == dict(config.webhook_secrets)["default"]
    assert config.change_log_seconds == 48 * 3600  # the retention, longer than the retry period


def test_the_start_block_says_where_webhooks_go_and_for_whom_and_no_secret(tmp_path):
    from conf.summary import describe_server

    text = describe_server(load_server_config(server_ini(tmp_path, "webhook_hosts = *.wenmr.eu",
                                                         f"[webhooks]\ndefault = {SECRET}\n")), "9.9.9")
    assert "webhooks: to *.wenmr.eu, signed for default, retried for 24 h" in text and SECRET not in text
    assert "webhooks: off" in describe_server(load_server_config(server_ini(tmp_path, "")), "9.9.9")


@pytest.mark.parametrize("server, extra, words", [
    ("webhook_hosts = a.org", "", "has no webhook secret; add [webhooks] default"),
    ("webhook_hosts = a.org", "[webhooks]\ndefault = whsec_short\n", "24 to 64 random bytes"),
    ("webhook_hosts = a.org", "[webhooks]\ndefault = not-a-secret-at-all-0123456789\n", "must be whsec_"),
    ("", f"[webhooks]\nalpha = {SECRET}\n", "alpha is not a portal of [tokens]"),
    ("webhook_hosts = http://a.org/", "", "is not a host pattern"),
    ("webhook_hosts = a.org:99999", "", "is not a host pattern"),
    ("webhook_retry_hours = 0", "", "webhook_retry_hours must be a positive number"),
    # NOTE: longer ones overflowed next_attempt() and the janitor's cutoff at every use (review item 9)
    ("webhook_retry_hours = 1e9", "", "webhook_retry_hours must be at most 87600 hours (ten years)"),
    ("webhook_backoff_seconds = 1e12", "", "webhook_backoff_seconds must be at most 3.1536e+08 seconds"),
    ("retention_hours = 1e9", "", "retention_hours must be at most 87600 hours"),
])
def test_a_webhook_setting_that_cannot_work_is_refused_naming_it(tmp_path, server, extra, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_server_config(server_ini(tmp_path, server, extra))


# --- the change log and the outbox, as storage writes them -------------------------------------------

def a_job(callback_url: str | None = None, portal: str | None = None) -> int:
    return jobs.create_job(1, "example", "/nonexistent", T0, portal, callback_url=callback_url)[0]


@db_session
def log_of(job_id: int) -> list[str]:
    return [state for _, state in select((c.id, c.state) for c in JobChange if c.job == job_id).order_by(1)]


def test_every_move_of_a_job_is_one_entry_and_only_running_and_outcomes_have_a_webhook(clean_database):
    hooked, plain = a_job("https://a.wenmr.eu/hook"), a_job()
    for job_id in (hooked, plain):
        jobs.claim_for_dispatch([job_id], T0)
        attempt = jobs.begin_attempts([(job_id, "http://e:1")], T0)[job_id]
        jobs.mark_submitted([(job_id, attempt, "t1")], T0)
        jobs.mark_running([(job_id, attempt)], T0)
        jobs.finish(job_id, attempt, JobState.COMPLETED, T0)
        jobs.mark_cleaned(job_id, T0)
    assert log_of(hooked) == log_of(plain) == ["Queued", "Dispatching", "Submitted", "Running", "Completed", "Cleaned"]
    with db_session:
        assert sorted(select(d.event for d in WebhookDelivery if d.job == hooked)) == ["Completed", "Running"]
        assert not select(d for d in WebhookDelivery if d.job == plain).exists()


def test_a_portal_reads_its_own_changes_in_pages_and_an_operator_every_portals(clean_database):
    alpha = jobs.create_job(1, "example", "/nonexistent", T0, "alpha")[1]["id"]
    beta = jobs.create_job(1, "example", "/nonexistent", T0, "beta")[1]["id"]
    jobs.cancel(alpha, "alpha", T0)
    page, last = changes.since(None, "alpha", 1)
    assert [(e["job"]["id"], e["status"]) for e in page] == [(alpha, "Queued")]
    rest, end = changes.since(last, "alpha", 10)
    assert [(e["job"]["id"], e["status"], e["job"]["status"]) for e in rest] == [(alpha, "Cancelled", "Cancelled")]
    assert changes.since(end, "alpha", 10) == ([], end)
    assert [(e["job"]["id"], e["status"]) for e in changes.since(None, "beta", 10)[0]] == [(beta, "Queued")]
    everything, _ = changes.since(None, jobs.EVERY_PORTAL, 10)
    assert [(e["job"]["id"], e["status"]) for e in everything] == [(alpha, "Queued"), (beta, "Queued"),
                                                                  (alpha, "Cancelled")]


def test_a_prune_deletes_the_entries_and_deliveries_older_than_the_cutoff_and_keeps_the_rest(clean_database):
    old = a_job("https://a.wenmr.eu/hook")
    jobs.cancel(old, None, T0)
    new = jobs.create_job(1, "example", "/nonexistent", T0 + timedelta(hours=2), callback_url=None)[0]
    assert changes.prune(T0 + timedelta(hours=1)) == 2
    assert log_of(old) == [] and log_of(new) == ["Queued"]
    with db_session:
        assert not WebhookDelivery.select().exists()
    assert changes.prune(T0 + timedelta(hours=1)) == 0


def test_a_prune_finds_the_first_entry_to_keep_once_however_many_batches(clean_database, monkeypatch):
    """Review item 8: the bound was found again (a scan) before every batch: quadratic on a backlog."""
    for _ in range(7):
        jobs.cancel(a_job(), None, T0)
    a_job_later = jobs.create_job(1, "example", "/x", T0 + timedelta(hours=2))[0]
    monkeypatch.setattr(changes, "PRUNE_BATCH", 2)
    ran = statements_of(lambda: changes.prune(T0 + timedelta(hours=1)))
    assert sum('"at" >=' in sql for sql, _ in ran) == 1, [sql for sql, _ in ran]
    assert log_of(a_job_later) == ["Queued"] and changes.since(None, None, 100)[0][0]["job"]["id"] == a_job_later


def test_a_read_from_a_cursor_older_than_the_oldest_change_kept_is_gone(clean_database):
    """Review item 10: the changes pruned after such a cursor were skipped silently."""
    jobs.cancel(a_job(), None, T0)
    _, start = changes.since(None, None, 1)  # after the first change: its cancel not read yet
    a_job_later = jobs.create_job(1, "example", "/x", T0 + timedelta(hours=2))[0]
    changes.prune(T0 + timedelta(hours=1))
    with pytest.raises(changes.Gone):
        changes.since(start, None, 10)
    assert [e["job"]["id"] for e in changes.since(None, None, 10)[0]] == [a_job_later]


def test_a_quiet_portals_cursor_keeps_up_with_the_feed_so_a_prune_of_others_changes_is_no_gap(clean_database):
    jobs.create_job(1, "example", "/x", T0, "alpha")
    _, alpha_at = changes.since(None, "alpha", 10)
    for _ in range(3):
        jobs.cancel(jobs.create_job(1, "example", "/x", T0, "beta")[1]["id"], "beta", T0)
    events, alpha_at = changes.since(alpha_at, "alpha", 10)
    assert events == [] and alpha_at == changes.since(None, jobs.EVERY_PORTAL, 100)[1]
    jobs.create_job(1, "example", "/x", T0 + timedelta(hours=2), "beta")
    changes.prune(T0 + timedelta(hours=1))
    assert changes.since(alpha_at, "alpha", 10)[0] == []  # no 410: alpha missed nothing


def test_a_jobs_webhooks_are_delivered_in_order_and_record_keeps_each_attempts_outcome(clean_database):
    """Review item 7: a Running waiting for its retry let the job's Completed go first."""
    job_id = a_job("https://a.wenmr.eu/hook")
    jobs.claim_for_dispatch([job_id], T0)
    attempt = jobs.begin_attempts([(job_id, "http://e:1")], T0)[job_id]
    jobs.mark_running([(job_id, attempt)], T0)
    jobs.finish(job_id, attempt, JobState.FAILED, T0, reason="boom")
    first = webhooks.due(T0, None, set(), 10)
    assert [(d.event, d.view["status"]) for d in first] == [("Running", "Failed")]  # one per job, its first move
    assert webhooks.due(T0, None, {job_id}, 10) == []  # one in flight: the job's next waits
    webhooks.record(first[0].id, T0, 500, "the receiver answered 500", T0 + timedelta(seconds=10))
    assert webhooks.due(T0 + timedelta(seconds=9), None, set(), 10) == []  # the Failed waits for the Running
    retried = webhooks.due(T0 + timedelta(seconds=10), None, set(), 10)
    assert [(d.id, d.webhook_id) for d in retried] == [(first[0].id, first[0].webhook_id)]
    webhooks.record(first[0].id, T0 + timedelta(seconds=10), None, "timed out", None)  # given up
    assert [d.event for d in webhooks.due(T0 + timedelta(seconds=10), None, set(), 10)] == ["Failed"]
    shown = webhooks.of_job(job_id, None)
    assert [(h["event"], h["attempts"], h["last_status"], h["next_attempt_at"], h["gave_up_at"]) for h in shown] == [
        ("Running", 2, None, None, "2026-11-30T08:00:10Z"), ("Failed", 0, None, "2026-11-30T08:00:00Z", None)]
    assert webhooks.of_job(job_id, "alpha") is None


def test_each_portal_reads_its_own_due_deliveries_however_many_another_portal_has(clean_database):
    for _ in range(5):
        jobs.cancel(jobs.create_job(1, "example", "/x", T0, "alpha", callback_url="https://a.org/")[1]["id"], "alpha", T0)
    beta = jobs.create_job(1, "example", "/x", T0, "beta", callback_url="https://b.org/")[1]["id"]
    jobs.cancel(beta, "beta", T0)
    assert len(webhooks.due(T0, "alpha", set(), 3)) == 3
    assert [(d.portal, d.view["id"]) for d in webhooks.due(T0, "beta", set(), 3)] == [("beta", beta)]
    assert webhooks.due(T0 - timedelta(seconds=1), "alpha", set(), 3) == []


def statements_of(call) -> list[tuple[str, str]]:
    """The SELECT statements `call` runs (its values bound), each with SQLite's query plan."""
    from storage.models import db

    with db_session:
        connection, statements = db.get_connection(), []
        connection.set_trace_callback(statements.append)
        try:
            call()
        finally:
            connection.set_trace_callback(None)
        return [(sql, " | ".join(row[-1] for row in connection.execute("EXPLAIN QUERY PLAN " + sql)))
                for sql in statements if sql.lstrip().upper().startswith("SELECT")]


def test_a_portals_due_read_walks_its_index_in_order_and_sorts_nothing(clean_database):
    """Review item 6: the due read sorted the whole due backlog (a temp b-tree) at each poll."""
    jobs.cancel(jobs.create_job(1, "example", "/x", T0, "alpha", callback_url="https://a.org/")[1]["id"], "alpha", T0)
    for portal in ("alpha", None):
        (_, plan), *_ = statements_of(lambda: webhooks.due(T0, portal, {5}, 4))
        assert "INDEX idx_webhookdelivery__portal_next_attempt_at_id (portal" in plan, plan
        assert "TEMP B-TREE" not in plan, plan


# --- one attempt, as the webhook actor's thread makes it ---------------------------------------------

def an_actor(**settings):
    from dataclasses import replace

    from actors.server.webhooks import WebhookActor
    from conf.settings import ServerConfig

    actor = WebhookActor()
    actor.config = replace(ServerConfig(webhook_hosts=("*.wenmr.eu",), webhook_secrets=(("default", SECRET),)),
                           **settings)
    return actor


@pytest.mark.parametrize("answer, retry_hours, event, state", [
    (webhook_post.Outcome(204, None), 24.0, "webhook_delivered", "delivered_at"),
    (webhook_post.Outcome(500, "the receiver answered 500"), 24.0, "webhook_failed", "next_attempt_at"),
    (webhook_post.Outcome(500, "the receiver answered 500"), 1e-9, "webhook_gave_up", "gave_up_at"),
    (webhook_post.Outcome(None, "no longer admitted", final=True), 24.0, "webhook_gave_up", "gave_up_at"),
])
def test_an_attempt_stores_its_outcome_and_says_it_in_one_event(clean_database, monkeypatch, answer, retry_hours,
                                                                   event, state):
    from tests.harness import events_heard

    job_id = a_job("https://a.wenmr.eu/hook")
    jobs.cancel(job_id, None, T0)
    monkeypatch.setattr(webhook_post, "post", lambda *args: answer)
    monkeypatch.setattr(clock, "utcnow", lambda: T0 + timedelta(seconds=1))  # the time of the attempt
    with events_heard() as heard:
        an_actor(webhook_retry_hours=retry_hours).attempt(webhooks.due(T0, None, set(), 1)[0])
    assert [name for name, _ in heard] == [event]
    shown = webhooks.of_job(job_id, None)[0]
    assert shown[state] is not None and shown["attempts"] == 1 and shown["last_status"] == answer.status
    assert [key for key in ("delivered_at", "next_attempt_at", "gave_up_at") if shown[key]] == [state]


def test_a_url_refused_only_at_send_time_is_given_up_not_raised(monkeypatch):
    """Review item 1: a non-ASCII host (stored before the upload check refused it) made post() raise
    UnicodeEncodeError in the Host header, which looped the webhook actor on it forever."""
    monkeypatch.setattr(pinned_http.socket, "getaddrinfo", lambda *a, **k: [(2, 1, 6, "", ("145.100.1.1", 80))])
    delivery = webhooks.Delivery(1, 1, None, "http://\u0436.wenmr.eu/hook", "Running", T0, 0, {"id": 1}, "msg_x")
    outcome = webhook_post.post(delivery, SECRET, PATTERNS, 1.0, T0)
    assert outcome.final and "no longer admitted" in outcome.error


def test_an_attempt_that_raises_is_a_failed_attempt_tried_again_later(clean_database, monkeypatch):
    job_id = a_job("https://a.wenmr.eu/hook")
    jobs.cancel(job_id, None, T0)

    def broken(*args):
        raise OverflowError("date value out of range")

    monkeypatch.setattr(webhook_post, "post", broken)
    monkeypatch.setattr(clock, "utcnow", lambda: T0)
    an_actor().attempt(webhooks.due(T0, None, set(), 1)[0])
    shown = webhooks.of_job(job_id, None)[0]
    assert (shown["attempts"], shown["next_attempt_at"], shown["gave_up_at"]) == (1, "2026-11-30T08:00:10Z", None)
    assert "OverflowError" in shown["last_error"] and webhooks.due(T0, None, set(), 1) == []


def test_a_job_whose_attempt_could_not_be_recorded_rests_before_it_is_sent_again(clean_database, monkeypatch):
    """Review item 1: the outcome not stored, the delivery stays due; the poll must not resend it at once."""
    job_id = a_job("https://a.wenmr.eu/hook")
    jobs.cancel(job_id, None, T0)
    actor, started = an_actor(), []
    monkeypatch.setattr(actor, "wakeupAfter", lambda *a: None)
    actor.configured(None)
    monkeypatch.setattr(actor, "pool", lambda portal: type("Pool", (), {"start": lambda s, *a: started.append(a)})())
    now = [T0]
    monkeypatch.setattr(clock, "utcnow", lambda: now[0])
    actor.send_due()
    delivery = started[0][1]
    actor.done((delivery, None, RuntimeError("database is locked")))
    actor.send_due()
    assert len(started) == 1  # resting
    now[0] = T0 + timedelta(seconds=10)
    actor.send_due()
    assert len(started) == 2 and started[1][1].id == delivery.id


# --- the signature -----------------------------------------------------------------------------------

def test_a_webhook_is_signed_as_standard_webhooks_receivers_verify_it(clean_database):
    job_id = a_job("https://a.wenmr.eu/hook")
    jobs.cancel(job_id, None, T0)
    delivery = webhooks.due(T0, None, set(), 10)[0]
    payload = webhook_post.body(delivery)
    headers = webhook_post.signed_headers(delivery, payload, SECRET, datetime.utcnow())
    received = Webhook(SECRET).verify(payload, headers)
    assert received["type"] == "job.cancelled" and received["data"]["id"] == job_id
    assert headers["webhook-id"] == delivery.webhook_id == webhooks.of_job(job_id, None)[0]["webhook_id"]


def test_a_webhook_id_is_random_not_a_count_of_every_portals_changes(clean_database):
    """Review item 2: `msg_<change number>` told a portal how many changes other portals had."""
    for _ in range(3):
        jobs.cancel(a_job("https://a.wenmr.eu/hook"), None, T0)
    ids = [d.webhook_id for d in webhooks.due(T0, None, set(), 10)]
    assert len(set(ids)) == 3 and all(re.fullmatch(r"msg_[A-Za-z0-9_-]{24}", i) for i in ids), ids


# --- HTTP ----------------------------------------------------------------------------------------------

def test_without_webhook_hosts_an_upload_with_a_callback_url_is_400_and_stores_nothing(tmp_path, clean_database):
    server = make_server(tmp_path)
    response = server.upload({"user_id": "1", "service": "example", "callback_url": "https://a.wenmr.eu/"}, (RUN,))
    assert response.status_code == 400 and "webhooks are off" in response.json["description"]
    assert server.leftovers() == [] and server.gateway.sent == []


def test_an_admitted_callback_url_is_kept_with_the_job(tmp_path, clean_database):
    server = make_server(tmp_path, webhook_hosts=("*.wenmr.eu",))
    response = server.upload({"user_id": "1", "service": "example", "callback_url": "https://a.wenmr.eu/h"}, (RUN,))
    assert response.status_code == 200, response.text
    with db_session:
        assert select(j.callback_url for j in jobs.Job).first() == "https://a.wenmr.eu/h"


@pytest.mark.parametrize("query, words", [
    ("after=nope", "after must be a next_cursor"),
    ("limit=0", "limit must be an integer from 1 to 1000"),
    ("limit=1001", "limit must be an integer from 1 to 1000"),
    ("since=1", "parameter 'since' is not accepted"),
    ("limit=1&limit=2", "limit may be given once"),  # review item 15: one of the two was taken silently
    ("after=a&after=b", "after may be given once"),
])
def test_a_bad_events_query_is_400_saying_what_is_accepted(tmp_path, clean_database, query, words):
    response = make_server(tmp_path).client.simulate_get("/events", query_string=query)
    assert response.status_code == 400 and words in response.json["description"]


def test_events_without_a_cursor_start_from_the_oldest_change_kept(tmp_path, clean_database):
    first = a_job()
    answer = make_server(tmp_path).client.simulate_get("/events").json
    assert [(e["job"]["id"], e["status"]) for e in answer["events"]] == [(first, "Queued")]
    assert feed_cursors.unseal(answer["next_cursor"]) == feed_cursors.unseal(answer["events"][0]["cursor"])


def test_events_from_a_pruned_cursor_are_410_telling_the_portal_to_re_sync(tmp_path, clean_database):
    client = make_server(tmp_path).client
    jobs.cancel(a_job(), None, T0)
    cursor = client.simulate_get("/events", params={"limit": "1"}).json["next_cursor"]
    changes.prune(T0 + timedelta(hours=1))
    response = client.simulate_get("/events", params={"after": cursor})
    assert response.status_code == 410 and "re-sync the jobs you follow with GET /jobs" in response.json["description"]
    forged_one = client.simulate_get("/events", params={"after": forged(cursor)})
    assert forged_one.status_code == 400 and "unchanged" in forged_one.json["description"]
