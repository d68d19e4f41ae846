"""Keeping a TES task's URL fetches and uploads off the internal network (SSRF), without a node
process: `[tes] url_hosts` at create (web/tes/validate.py: 400, nothing stored), the patterns in
the plan, and the TES stage's check of the addresses a host resolves to at each GET and PUT and
its refusal of redirects (actors/node/tes_stage.py, conf/pinned_http.py).
"""
from __future__ import annotations

import json

import pytest
from pony.orm import db_session, select

from actors.node import tes_stage
from conf import pinned_http
from conf.settings import ConfigError, ServiceConfig, TesConfig, load_server_config
from storage.models import Job, TesTask
from storage.node import tes_plan
from storage.node.tes_plan import Input, Output, Plan
from tests.harness import file_host, make_server, redirect_host
from tests.test_settings import server_ini
from web.tes import script

TASKS = "/ga4gh/tes/v1/tasks"
TASK = {"name": "t", "executors": [{"image": "alpine", "command": ["true"]}]}


def tes_server(tmp_path, url_hosts: tuple[str, ...]):
    return make_server(tmp_path, (ServiceConfig("example"),), tes=TesConfig((("alpine", "example"),),
                                                                                url_hosts=url_hosts))


@pytest.mark.parametrize("url_hosts, field, url, words", [
    ((), "inputs", "http://127.0.0.1:9/x", "inputs[0].url 'http://127.0.0.1:9/x' names a loopback"),
    ((), "inputs", "http://169.254.169.254/latest/meta-data/", "any host whose addresses are global"),
    ((), "outputs", "https://[::1]/up", "outputs[0].url 'https://[::1]/up' names a loopback"),
    ((), "outputs", "http://10.0.0.7/up", "names a loopback, link-local, private or reserved address"),
    ((), "inputs", "https://user:secret@data.example.org/x", "without credentials"),
    (("*.example.org",), "inputs", "https://data.other.org/x", "accepted: *.example.org"),
    (("*.0.0.1",), "inputs", "http://127.0.0.1/x", "only a host listed exactly in [tes] url_hosts"),
])
def test_an_http_url_the_node_must_not_reach_gets_400_naming_it_and_nothing_is_stored(
        tmp_path, clean_database, url_hosts, field, url, words):
    server = tes_server(tmp_path, url_hosts)
    answer = server.client.simulate_post(TASKS, json={**TASK, field: [{"path": "/data/x", "url": url}]})

    assert answer.status_code == 400 and words in answer.json["description"], answer.json
    assert server.leftovers() == [] and server.gateway.posted == []
    with db_session:
        assert select(j for j in Job).count() == 0 and select(t for t in TesTask).count() == 0


@pytest.mark.parametrize("url_hosts, url", [
    ((), "https://data.example.org/x"),  # a name: its addresses are checked by the node
    (("127.0.0.1",), "http://127.0.0.1:8080/x"),  # loopback, listed exactly
    (("*.example.org",), "s3://bucket/x"),  # not fetched: the task ends SYSTEM_ERROR (another test)
])
def test_a_url_the_patterns_admit_is_accepted(tmp_path, clean_database, url_hosts, url):
    server = tes_server(tmp_path, url_hosts)
    answer = server.client.simulate_post(TASKS, json={**TASK, "outputs": [{"path": "/data/x", "url": url}]})
    assert answer.status_code == 200, answer.json


def test_url_hosts_is_read_from_tes_and_a_bad_pattern_refuses_the_start(tmp_path):
    service = "[service.example]\nclients = http://h:1\n[tes]\nimages = alpine=example\n"
    config = load_server_config(server_ini(tmp_path, "", service + "url_hosts = *.Example.org, 127.0.0.1:8080\n"),
                                environ={})
    assert config.tes.url_hosts == ("*.example.org", "127.0.0.1:8080")
    with pytest.raises(ConfigError, match=r"\[tes\] url_hosts has 'http://a.org/'"):
        load_server_config(server_ini(tmp_path, "", service + "url_hosts = http://a.org/\n"), environ={})


def test_the_plan_carries_the_patterns_to_the_node(tmp_path):
    task = {**TASK, "inputs": [], "outputs": []}
    script.write_job_files(str(tmp_path), task, json.dumps(script.plan(task, 5, ("*.example.org",))))

    plan = tes_plan.parse((tmp_path / "tes" / "plan.json").read_text())
    assert plan.url_hosts == ("*.example.org",)
    assert tes_plan.parse('{"version": 1, "roots": [], "max_input_bytes": 0}').url_hosts == ()  # any global host


def resolving_to(monkeypatch, address: str) -> None:
    monkeypatch.setattr(pinned_http.socket, "getaddrinfo", lambda *a, **k: [(2, 1, 6, "", (address, 80))])


def test_the_stage_refuses_an_input_whose_host_now_resolves_to_a_non_global_address(tmp_path, monkeypatch):
    resolving_to(monkeypatch, "169.254.169.254")  # e.g. DNS rebinding since the create
    plan = Plan(("d",), (Input("http://data.example.org/x", "/d/x"),), (), 100)

    with pytest.raises(tes_stage.StageFailed) as failed:
        tes_stage.fetch_inputs(plan, str(tmp_path))

    assert str(failed.value).startswith("TES input /d/x: data.example.org resolves to a non-global address "
                                        "169.254.169.254")
    assert not (tmp_path / "d" / "x").exists()


def test_the_stage_refuses_an_upload_to_a_host_resolving_to_a_non_global_address(tmp_path, monkeypatch):
    (tmp_path / "root" / "out").mkdir(parents=True)
    (tmp_path / "root" / "out" / "a.txt").write_text("result")
    resolving_to(monkeypatch, "10.0.0.7")
    plan = Plan(("out",), (), (Output("/out/a.txt", "https://up.example.org/a"),), 0, ("*.example.org",))

    _, reason = tes_stage.collect_and_upload(plan, str(tmp_path), str(tmp_path / "root"), succeeded=True)

    assert reason.startswith("TES output /out/a.txt: upload to https://up.example.org/a failed: up.example.org "
                             "resolves to a non-global address 10.0.0.7")


@pytest.mark.parametrize("location", ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.2:9/x"])
def test_the_stage_follows_no_redirect_of_an_admitted_host(tmp_path, location):
    """url_hosts lists 127.0.0.1 only; its answer points elsewhere: the stage fails saying so and
    never asks there."""
    with redirect_host(location) as url:
        plan = Plan(("d",), (Input(f"{url}/x", "/d/x"),), (), 100, ("127.0.0.1",))
        with pytest.raises(tes_stage.StageFailed, match="HTTP 302, a redirect to .*redirects are not followed"):
            tes_stage.fetch_inputs(plan, str(tmp_path))
        upload = tes_stage.upload(__file__, f"{url}/up", ("127.0.0.1",))
    assert "HTTP 302" in upload and "redirects are not followed" in upload
    assert not (tmp_path / "d" / "x").exists()


def test_the_stage_still_fetches_from_a_listed_host(tmp_path):
    with file_host({"/x": b"data"}) as host:
        tes_stage.fetch_inputs(Plan(("d",), (Input(f"{host.url}/x", "/d/x"),), (), 100, ("127.0.0.1",)), str(tmp_path))
        assert tes_stage.upload(str(tmp_path / "d" / "x"), f"{host.url}/up/x", ("127.0.0.1",)) is None
        assert host.received == {"/up/x": b"data"}
    assert (tmp_path / "d" / "x").read_bytes() == b"data"


@pytest.mark.parametrize("url", ["http://localhost:9/x", "http://2130706433:9/x", "http://0x7f.1:9/x"])
def test_a_name_or_odd_address_form_the_create_let_through_is_refused_by_the_node_once_resolved(tmp_path, url):
    """Not literal addresses to the create's check (`ipaddress` reads neither), but the node's
    resolver makes them 127.0.0.1 or ::1."""
    with pytest.raises(tes_stage.StageFailed, match="resolves to a non-global address"):
        tes_stage.fetch_inputs(Plan(("d",), (Input(url, "/d/x"),), (), 100), str(tmp_path))
