"""The client module and the `orchestrator` command without a server: requests answered by a
canned transport (a requests adapter), argument parsing, environment variables, exit codes, error
sentences, the one-line description of a job."""
from __future__ import annotations

import io
import json
import zipfile

import pytest
import requests
from requests.adapters import BaseAdapter

from orchestrator_client import Client, OrchestratorError, cli
from orchestrator_client.display import describe

QUEUED = {"id": "jabc", "user_id": 7, "service": "example", "status": "Queued", "outcome": None,
          "queue": {"position": 3, "position_for_user": 1, "waiting_for": "runs_per_user",
                    "detail": "user 7 has 5 of 5 jobs active", "estimated_start": None}}
FAILED = {**QUEUED, "queue": None, "status": "Failed", "outcome": "Failed", "reason": "run.sh exited with 3",
          "exit_code": 3}


class Canned(BaseAdapter):
    """Answers each request with the next of `answers`: (status, body: dict|bytes, headers); keeps
    the requests it got. An exception in `answers` is raised instead (a connection error)."""

    def __init__(self, *answers):
        super().__init__()
        self.answers = list(answers)
        self.sent: list[requests.PreparedRequest] = []
        self.bodies: list[bytes] = []

    def send(self, request, **kwargs):
        self.sent.append(request)
        self.bodies.append(request.body.read() if hasattr(request.body, "read") else request.body)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, body, headers = (*answer, {})[:3]
        response = requests.Response()
        response.status_code, response.request, response.url = status, request, request.url
        response.reason = {200: "OK", 404: "Not Found", 502: "Bad Gateway"}.get(status, "")
        response.raw = io.BytesIO(body if isinstance(body, bytes) else json.dumps(body).encode())
        response.headers.update(headers)
        return response

    def close(self):
        pass


def client(*answers, token=None) -> tuple[Client, Canned]:
    transport = Canned(*answers)
    session = requests.Session()
    session.mount("http://", transport)
    return Client("http://orchestrator.test/", token, session=session), transport


def test_a_refusal_raises_one_error_with_the_servers_title_and_description():
    api, _ = client((404, {"title": "Unknown job", "description": "there is no job 9."}))

    with pytest.raises(OrchestratorError) as raised:
        api.status(9)

    assert str(raised.value) == "there is no job 9." and raised.value.status == 404
    assert raised.value.title == "Unknown job"


def test_an_answer_that_is_not_json_and_no_answer_at_all_are_sentences_too():
    api, _ = client((502, b"<html>proxy</html>"), requests.ConnectionError("refused"))

    with pytest.raises(OrchestratorError, match=r"^the server answered 502 Bad Gateway\.$"):
        api.status(1)
    with pytest.raises(OrchestratorError, match=r"^cannot reach the orchestrator at http://orchestrator.test "):
        api.status(1)


def test_the_token_goes_as_a_bearer_and_the_upload_carries_its_fields(tmp_path):
    (tmp_path / "run.sh").write_text("true\n")
    api, transport = client((200, QUEUED), token="s3cret")
    seen = []

    view = api.submit([tmp_path / "run.sh", ("input.txt", b"data")], "example", 7,
                      callback_url="https://portal.test/hook", progress=lambda sent, total: seen.append((sent, total)))

    body = transport.bodies[0]
    assert view == QUEUED and transport.sent[0].headers["Authorization"] == "Bearer s3cret"
    assert b'filename="run.sh"' in body and b'filename="input.txt"' in body and b"https://portal.test/hook" in body
    assert seen and seen[-1][0] == seen[-1][1] == len(body)


def test_the_upload_carries_the_scheduling_fields_only_when_given(tmp_path):
    api, transport = client((200, QUEUED), (200, QUEUED))

    api.submit([("run.sh", b"true\n")], "example", 7, priority=-3, group="class-a", max_runtime=600)
    api.submit([("run.sh", b"true\n")], "example", 7)

    given, plain = transport.bodies
    for name, value in (("priority", b"-3"), ("group", b"class-a"), ("max_runtime", b"600")):
        assert f'name="{name}"'.encode() in given and b"\r\n\r\n" + value + b"\r\n" in given
        assert f'name="{name}"'.encode() not in plain


def test_list_follows_next_cursor_until_there_is_none():
    api, transport = client((200, {"jobs": [{"id": 3}, {"id": 2}], "next_cursor": "c1"}),
                            (200, {"jobs": [{"id": 1}], "next_cursor": None}))

    ids = [view["id"] for view in api.list(user_id=7, status=["Queued", "Running"])]

    assert ids == [3, 2, 1]
    assert transport.sent[0].url.endswith("/jobs?user_id=7&status=Queued&status=Running")
    assert transport.sent[1].url.endswith("&cursor=c1")
    with pytest.raises(TypeError, match="colour"):
        next(api.list(colour="red"))


def test_wait_reports_each_change_once_and_returns_the_ended_view():
    running = {**QUEUED, "queue": None, "status": "Running"}
    api, _ = client((200, QUEUED), (200, QUEUED), (200, running), (200, FAILED))
    changes = []

    assert api.wait("jabc", poll=0, on_change=changes.append) == FAILED
    assert [view["status"] for view in changes] == ["Queued", "Running", "Failed"]


def test_wait_past_its_timeout_says_where_the_job_is():
    api, _ = client(*[(200, QUEUED)] * 3)

    with pytest.raises(OrchestratorError, match=r"job jabc had not ended after 0 s \(it is Queued\)\."):
        api.wait("jabc", poll=0, timeout=0)


def test_log_gives_the_bytes_and_the_logs_size():
    api, transport = client((200, b"line 2\n", {"X-Log-Size": "14"}))

    assert api.log("jabc", "stderr", offset=7) == (b"line 2\n", 14)
    assert transport.sent[0].url.endswith("/jobs/jabc/log?stream=stderr&offset=7")


def test_describe_says_why_a_job_waits_and_why_it_failed():
    assert describe(QUEUED) == ("job jabc: Queued, position 3 in example, waiting for runs_per_user "
                                "(user 7 has 5 of 5 jobs active)")
    assert describe(FAILED) == "job jabc: Failed: run.sh exited with 3 (exit code 3)"


def test_url_and_token_come_from_the_flags_else_the_environment(monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_URL", "http://env.test:5000")
    monkeypatch.setenv("ORCHESTRATOR_TOKEN", "from-env")
    from_env = cli.parser().parse_args(["status", "1"])
    flags = cli.parser().parse_args(["--url", "http://flag.test", "--token", "t", "status", "1"])
    monkeypatch.delenv("ORCHESTRATOR_URL")
    monkeypatch.delenv("ORCHESTRATOR_TOKEN")
    default = cli.parser().parse_args(["status", "1"])

    assert (from_env.url, from_env.token) == ("http://env.test:5000", "from-env")
    assert (flags.url, flags.token) == ("http://flag.test", "t")
    assert (default.url, default.token) == (cli.DEFAULT_URL, None)


@pytest.mark.parametrize("argv, says", [
    ([], "required: command"),
    (["submit", "run.sh", "--user", "1"], "required: --service"),
    (["submit", "run.sh", "--service", "example", "--user", "seven"], "invalid int value: 'seven'"),
    (["logs", "1", "--stream", "both"], "invalid choice: 'both'"),
])
def test_a_usage_error_is_one_line_and_exit_code_2(argv, says, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)

    err = capsys.readouterr().err
    assert exited.value.code == 2 and says in err and err.count("\n") == 1, err


@pytest.mark.parametrize("view, code", [({"status": "Completed", "outcome": "Completed"}, 0),
                                        ({"status": "Running", "outcome": None}, 0),
                                        ({"status": "Failed", "outcome": "Failed"}, 1),
                                        ({"status": "Cancelled", "outcome": "Cancelled"}, 1),
                                        ({"status": "Cleaned", "outcome": "Failed"}, 1),
                                        ({"status": "Cleaned", "outcome": "Completed"}, 0)])
def test_exit_codes_follow_the_jobs_outcome(view, code):
    assert cli.exit_code(view) == code


def test_the_command_prints_the_servers_sentence_and_exits_2_or_the_jobs_code(monkeypatch, capsys):
    answers = [(404, {"title": "Unknown job", "description": "there is no job 9."}), (200, FAILED)]
    monkeypatch.setattr(cli, "Client", lambda url, token, timeout: client(answers.pop(0))[0])

    refused = cli.main(["status", "9"])
    refused_out = capsys.readouterr()
    failed = cli.main(["status", "jabc"])

    assert refused == 2 and refused_out.err == "orchestrator: there is no job 9.\n" and refused_out.out == ""
    assert failed == 1 and capsys.readouterr().out == describe(FAILED) + "\n"


def test_download_unpacks_the_results_or_keeps_the_zip_and_says_when_there_are_none(tmp_path):
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("out.txt", "hello\n")
        archive.writestr("5.zip", "a result named as the download")
    zipped = packed.getvalue()
    api, _ = client((200, zipped), (200, zipped), (202, {"id": 5, "status": "Running"}), (204, b""), (200, FAILED))

    assert api.download(5, tmp_path / "files") == tmp_path / "files"
    assert api.download(5, tmp_path / "zip", extract=False).read_bytes() == zipped
    with pytest.raises(OrchestratorError, match=r"^job 5 has not ended yet\.$"):
        api.download(5, tmp_path / "nothing")
    with pytest.raises(OrchestratorError, match=r"^job 5 has no results: it is Failed \(run.sh exited with 3\)\.$"):
        api.download(5, tmp_path / "nothing")
    assert (tmp_path / "files" / "out.txt").read_text() == "hello\n"
    assert (tmp_path / "files" / "5.zip").read_text() == "a result named as the download"
    assert not (tmp_path / "nothing").exists()


def test_list_takes_an_operators_portal_filter_and_reads_only_the_pages_asked_for():
    api, transport = client((200, {"jobs": [{"id": 3}, {"id": 2}], "next_cursor": "c1"}))

    ids = [view["id"] for view in api.list(pages=1, portal="astro", limit=2)]

    assert ids == [3, 2] and len(transport.sent) == 1
    assert transport.sent[0].url.endswith("/jobs?portal=astro&limit=2")


def log_answers(*parts: bytes, start: int = 0) -> list[tuple]:
    """The server's answers to offset reads from `start` that return `parts`, then an empty one:
    X-Log-Size is where each ends (as when the 1 MiB cap cut them)."""
    ends = [start + sum(map(len, parts[:n + 1])) for n in range(len(parts))]
    return [(200, part, {"X-Log-Size": str(end)}) for part, end in zip(parts, ends)] + [
        (200, b"", {"X-Log-Size": str(ends[-1] if ends else start)})]


def test_log_to_end_reads_until_an_answer_comes_back_empty():
    api, transport = client(*log_answers(b"aaa", b"bb", b"c"))

    chunks = [chunk.data for chunk in api.log_to_end("jabc", "stderr")]

    assert chunks == [b"aaa", b"bb", b"c"]
    assert [request.url.rsplit("offset=", 1)[1] for request in transport.sent] == ["0", "3", "5", "6"]


def test_logs_prints_a_log_longer_than_one_answer_whole_with_or_without_follow(monkeypatch, capsysbinary):
    running, ended = {**FAILED, "status": "Running", "outcome": None}, {**FAILED, "status": "Completed",
                                                                         "outcome": "Completed"}
    answers = [log_answers(b"aaa", b"bb", b"c"),
               [*log_answers(b"aaa"), (200, running), *log_answers(b"bb", b"c", start=3), (200, ended),
                *log_answers(start=6)]]
    monkeypatch.setattr(cli, "Client", lambda url, token, timeout: client(*answers.pop(0))[0])

    printed = cli.main(["logs", "jabc"])
    printed_out = capsysbinary.readouterr().out
    followed = cli.main(["logs", "jabc", "-f", "--poll", "0"])

    assert printed == 0 and printed_out == b"aaabbc"
    assert followed == 0 and capsysbinary.readouterr().out == b"aaabbc"


def test_wait_asks_again_while_the_server_is_down_or_passing_with_pauses_that_double(monkeypatch):
    pauses = []
    monkeypatch.setattr("orchestrator_client.client.time.sleep", pauses.append)
    down = requests.ConnectionError("refused")
    api, transport = client(down, (502, b"proxy"), (503, {"title": "Unavailable"}), (200, QUEUED), down, (200, FAILED))

    assert api.wait("jabc", poll=1) == FAILED
    assert pauses == [1, 2, 4, 1, 1] and len(transport.sent) == 6  # NOTE: back to 1 s once it answered


def test_wait_gives_up_after_its_patience_and_at_once_on_a_refusal(monkeypatch):
    monkeypatch.setattr("orchestrator_client.client.time.sleep", lambda seconds: None)
    api, transport = client(requests.ConnectionError("refused"), (404, {"description": "there is no job 9."}))

    with pytest.raises(OrchestratorError, match="cannot reach the orchestrator"):
        api.wait("jabc", patience=0)
    with pytest.raises(OrchestratorError, match="there is no job 9"):
        api.wait(9)
    assert len(transport.sent) == 2


def test_submit_json_wait_prints_the_ended_view_and_nothing_else(monkeypatch, capsys, tmp_path):
    (tmp_path / "run.sh").write_text("true\n")
    monkeypatch.setattr(cli, "Client", lambda url, token, timeout: client((200, QUEUED), (200, QUEUED),
                                                                          (200, FAILED))[0])

    code = cli.main(["submit", str(tmp_path / "run.sh"), "--service", "example", "--user", "7", "--wait", "--json",
                     "--poll", "0"])

    assert code == 1 and json.loads(capsys.readouterr().out) == FAILED


def test_watch_reads_one_page_and_says_why_the_oldest_waiting_jobs_wait(monkeypatch, capsys):
    jobs = [{"id": n, "user_id": 7, "service": "example", "status": "Queued", "created_at": "t"}
            for n in range(12, 0, -1)]
    running = {**jobs[0], "id": 13, "status": "Running"}
    services = {"generated_at": "now", "services": [
        {"name": "example", "queued": 12, "active": 1, "executors": [{"free_slots": 0}], "median_wait_seconds": None,
         "median_run_seconds": 2.5}]}
    why = [(200, {**view, "queue": {**QUEUED["queue"], "position": view["id"]}}) for view in jobs[2:]]
    api, transport = client((200, {"jobs": [running, *jobs], "next_cursor": "more"}), *why, (200, services))
    monkeypatch.setattr(cli, "Client", lambda url, token, timeout: api)

    assert cli.main(["watch", "--once"]) == 0

    rows = {line.split("\t")[0]: line.split("\t") for line in capsys.readouterr().out.splitlines()}
    assert len(transport.sent) == 1 + 10 + 1 and transport.sent[-1].url.endswith("/services")
    assert rows["1"][4:6] == ["1", "runs_per_user"] and rows["10"][4:6] == ["10", "runs_per_user"]
    assert rows["11"][4:6] == rows["13"][4:6] == ["", ""]
