"""GA4GH TES 1.1 from a real client: py-tes 1.1.4 against real server and executor processes
(issue 16, first slice). One module cluster: `example` runs tasks of image `alpine`; `idle` (image
`idle`) has no executor, so its tasks stay queued.
"""
from __future__ import annotations

import pytest
import requests
import tes
from tes.utils import unmarshal

from tests.harness import add_section, results, wait_until
from tests.tes_schema import check_schema


@pytest.fixture(scope="module")
def executor(module_cluster):
    return module_cluster.executor("example")


@pytest.fixture(scope="module")
def server(module_cluster, executor):
    node = module_cluster.server({"example": {"clients": executor.url, "runs_per_user": 4, "max_cores": 2},
                                  "idle": {}}, start=False)
    return add_section(node, "tes", {"images": "alpine=example, idle=idle"}).start()


@pytest.fixture(scope="module")
def client(server):
    return tes.HTTPClient(server.url, timeout=10)


def alpine(*command: str, **fields) -> tes.Executor:
    return tes.Executor(image="alpine", command=list(command), **fields)


def test_a_task_with_a_content_input_runs_its_executors_in_order_and_its_full_view_has_their_logs(server, client):
    task = tes.Task(name="tes-order", tags={"user_id": "7", "run": "a"},
                    inputs=[tes.Input(path="/data/in.txt", content="hello tes\n")],
                    outputs=[tes.Output(path="/data/out.txt", url="s3://bucket/out.txt")],  # not uploaded
                    executors=[alpine("cat", stdin="/data/in.txt", stdout="/data/out.txt"),
                               alpine("sh", "-c", 'echo "$GREETING"; echo warned >&2', env={"GREETING": "hi there"},
                                      workdir="/work")])
    task_id = client.create_task(task)

    assert client.wait(task_id, timeout=30).state == "COMPLETE"
    full = client.get_task(task_id, "FULL")
    assert [e.exit_code for e in full.logs[0].logs] == [0, 0]
    assert full.logs[0].logs[1].stdout == "hi there\n" and full.logs[0].logs[1].stderr == "warned\n"
    assert full.logs[0].start_time and full.logs[0].end_time and full.creation_time
    assert full.inputs[0].content == "hello tes\n" and full.tags == {"user_id": "7", "run": "a"}
    basic = client.get_task(task_id, "BASIC")
    assert basic.inputs[0].content is None and basic.logs[0].logs[1].stdout is None
    assert results(server, task_id).read("root/data/out.txt") == b"hello tes\n"
    for view in ("MINIMAL", "BASIC", "FULL"):
        check_schema(requests.get(f"{server.url}/ga4gh/tes/v1/tasks/{task_id}", params={"view": view}, timeout=10),
                     "/tasks/{id}", view=view)


def test_a_failing_command_ends_the_task_executor_error_and_later_executors_do_not_run(client):
    task_id = client.create_task(tes.Task(name="tes-fail", executors=[
        alpine("sh", "-c", "echo working; echo 'no such input' >&2; exit 3"), alpine("true")]))

    assert client.wait(task_id, timeout=30).state == "EXECUTOR_ERROR"
    # Its logs are in its results, fetched just after its outcome is written.
    full = wait_until(lambda: (task := client.get_task(task_id, "FULL")).logs[0].logs and task, 10, 0.05, "its logs")
    [log] = full.logs[0].logs  # the second executor never ran
    assert (log.exit_code, log.stdout, log.stderr) == (3, "working\n", "no such input\n")
    assert full.logs[0].system_logs[0] == "run.sh exited with code 3"


def test_a_task_with_an_s3_input_is_created_and_ends_system_error_without_running(server, executor, client):
    task_id = client.create_task(tes.Task(name="tes-s3", inputs=[tes.Input(path="/data/in.txt", url="s3://bucket/in.txt")],
                                          executors=[alpine("cat", "/data/in.txt")]))

    full = client.get_task(task_id, "FULL")
    assert full.state == "SYSTEM_ERROR" and full.logs[0].logs == []
    assert full.logs[0].system_logs == ["TES input /data/in.txt: scheme s3 is not supported (inputs may be content "
                                        "or http(s) URLs)"]
    assert requests.get(f"{server.url}/jobs/{task_id}", timeout=10).json()["attempts"] == 0
    assert all(task["job_id"] != int(task_id) for task in executor.tasks())


def test_an_http_input_on_a_loopback_address_is_refused_with_400_by_a_server_without_url_hosts(client):
    """SSRF: the executor node would GET it from its own network; 400 before anything is stored."""
    task = tes.Task(name="tes-ssrf", inputs=[tes.Input(path="/data/in.txt", url="http://127.0.0.1:9/x")],
                    executors=[alpine("true")])
    with pytest.raises(requests.HTTPError) as refused:
        client.create_task(task)
    assert refused.value.response.status_code == 400
    assert "inputs[0].url 'http://127.0.0.1:9/x' names a loopback" in refused.value.response.json()["description"]
    assert "tes-ssrf" not in [t.name for t in client.list_tasks(view="BASIC").tasks]


def test_a_task_asking_for_more_cores_than_its_service_gives_is_refused_with_400(client):
    task = tes.Task(name="tes-cores", resources=tes.Resources(cpu_cores=3), executors=[alpine("true")])
    with pytest.raises(requests.HTTPError) as refused:
        client.create_task(task)
    assert refused.value.response.status_code == 400
    assert "max_cores = 2" in refused.value.response.json()["description"]


def test_a_completed_tasks_logs_list_its_outputs_with_our_download_url(server, client):
    task_id = client.create_task(tes.Task(name="tes-out", outputs=[tes.Output(path="/out/a.txt", url="file:///x/a.txt")],
                                          executors=[alpine("sh", "-c", "mkdir -p /out && echo made > /out/a.txt")]))

    assert client.wait(task_id, timeout=30).state == "COMPLETE"
    full = client.get_task(task_id, "FULL")
    [output] = full.logs[0].outputs
    assert (output.path, int(output.size_bytes)) == ("/out/a.txt", 5)  # py-tes makes the spec's string an int
    raw = requests.get(f"{server.url}/ga4gh/tes/v1/tasks/{task_id}", params={"view": "BASIC"}, timeout=10).json()
    assert raw["logs"][0]["outputs"][0]["size_bytes"] == "5"
    assert output.url == f"{server.url}/jobs/{task_id}/files/root/out/a.txt"
    assert requests.get(output.url, timeout=10).text == "made\n"
    assert any("not uploaded" in line for line in full.logs[0].system_logs)


def test_a_queued_task_is_cancelled(client):
    task_id = client.create_task(tes.Task(name="tes-idle", executors=[tes.Executor(image="idle", command=["true"])]))
    assert client.get_task(task_id, "MINIMAL").state == "QUEUED"

    client.cancel_task(task_id)

    assert client.get_task(task_id, "BASIC").state == "CANCELED"


def test_the_list_pages_newest_first_and_filters_by_name_state_and_tags(server, client):
    made = [client.create_task(tes.Task(name=f"tes-list-{n}", tags={"batch": "L", "n": str(n)},
                                        executors=[tes.Executor(image="idle", command=["true"])])) for n in range(3)]
    first = client.list_tasks(view="MINIMAL", page_size=2)
    second = client.list_tasks(view="MINIMAL", page_size=2, page_token=first.next_page_token)
    seen = [t.id for t in first.tasks + second.tasks]
    assert seen[:3] == made[::-1]

    def listed(**params) -> list[str]:
        answer = requests.get(f"{server.url}/ga4gh/tes/v1/tasks", params=params, timeout=10)
        check_schema(answer, "/tasks", view=params.get("view", "MINIMAL"))
        return [t.id for t in unmarshal(answer.json(), tes.ListTasksResponse).tasks]

    assert listed(name_prefix="tes-list-", view="BASIC") == made[::-1]
    assert listed(name_prefix="tes-list-", view="FULL") == made[::-1]
    assert listed(tag_key=["batch", "n"], tag_value=["L", "1"]) == [made[1]]
    assert listed(tag_key="n", name_prefix="tes-list") == made[::-1]
    client.cancel_task(made[0])
    wait_until(lambda: listed(state="CANCELED", name_prefix="tes-list-") == [made[0]], 10, 0.05, "the cancel")
    assert listed(state="QUEUED", name_prefix="tes-list-") == made[:0:-1]


def test_service_info_and_a_created_tasks_answers_are_what_the_spec_allows(server):
    check_schema(requests.get(f"{server.url}/ga4gh/tes/v1/service-info", timeout=10), "/service-info")
    created = requests.post(f"{server.url}/ga4gh/tes/v1/tasks", timeout=10,
                            json={"name": "tes-schema", "executors": [{"image": "idle", "command": ["true"]}]})
    check_schema(created, "/tasks", "POST")
    cancelled = requests.post(f"{server.url}/ga4gh/tes/v1/tasks/{created.json()['id']}:cancel", timeout=10)
    check_schema(cancelled, "/tasks/{id}:cancel", "POST")
