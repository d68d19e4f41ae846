"""A GA4GH TES task on the executor node, from a real client (py-tes) against real server and
executor processes: the task's absolute paths mapped into its folder by the sandbox, http inputs
fetched and http outputs PUT by the node's TES stage (actors/node/tes_stage.py), to and from a real
HTTP server in the test; a failed fetch and a node without a sandbox end SYSTEM_ERROR saying why.

One module cluster: `example` (image `alpine`) runs in bubblewrap; `bare` (image `bare`) runs jobs
without a sandbox.
"""
from __future__ import annotations

import json

import pytest
import tes

from tests.harness import add_section, file_host, needs, results

pytestmark = needs("bwrap", "TES tasks map their paths with bubblewrap")


@pytest.fixture(scope="module")
def web():
    with file_host({"/files/in.txt": b"fetched content\n"}) as host:
        yield host


@pytest.fixture(scope="module")
def server(module_cluster):
    executor = module_cluster.executor("example", sandbox="bwrap")
    bare = module_cluster.executor("bare", sandbox="none")
    node = module_cluster.server({"example": {"clients": executor.url}, "bare": {"clients": bare.url}}, start=False)
    return add_section(node, "tes", {"images": "alpine=example, bare=bare", "url_hosts": "127.0.0.1"}).start()


@pytest.fixture(scope="module")
def client(server):
    return tes.HTTPClient(server.url, timeout=10)


def sh(script: str, image: str = "alpine") -> tes.Executor:
    return tes.Executor(image=image, command=["sh", "-c", script])


def test_commands_see_the_tasks_absolute_paths_with_content_and_fetched_inputs_and_the_output_is_put(
        server, client, web):
    task_id = client.create_task(tes.Task(
        name="tes-paths",
        inputs=[tes.Input(path="/data/in.txt", content="given\n"),
                tes.Input(path="/data/more/fetched.txt", url=f"{web.url}/files/in.txt")],
        outputs=[tes.Output(path="/out/x.txt", url=f"{web.url}/up/x.txt")],
        executors=[sh("cat /data/in.txt /data/more/fetched.txt > /out/x.txt")]))

    assert client.wait(task_id, timeout=30).state == "COMPLETE"
    assert web.received["/up/x.txt"] == b"given\nfetched content\n"
    listed = json.loads(results(server, task_id).read("tes/outputs.json"))
    assert listed == [{"path": "/out/x.txt", "file": "root/out/x.txt", "size_bytes": 22, "url": f"{web.url}/up/x.txt"}]


def test_wildcard_outputs_are_put_one_by_one_at_the_url_with_the_path_less_its_prefix(client, web):
    task_id = client.create_task(tes.Task(
        name="tes-glob",
        outputs=[tes.Output(path="/out/*.txt", path_prefix="/out/", url=f"{web.url}/glob/"),
                 tes.Output(path="/res/tree", url=f"{web.url}/tree", type="DIRECTORY"),
                 # NOTE: the test's job folders are under /tmp too: the task's /tmp holds the job folder's mount point
                 tes.Output(path="/tmp/w/e.txt", url=f"{web.url}/glob/e")],
        executors=[sh("echo a > /out/a.txt; echo b > /out/b.txt; echo c > /out/c.log; mkdir /tmp/w; echo e > /tmp/w/e.txt; "
                      "mkdir -p /res/tree/sub; echo d > /res/tree/sub/d.txt; ln -s /etc/passwd /res/tree/leak")]))

    assert client.wait(task_id, timeout=30).state == "COMPLETE"
    assert {path: body for path, body in web.received.items() if path.startswith(("/glob/", "/tree/"))} == \
        {"/glob/a.txt": b"a\n", "/glob/b.txt": b"b\n", "/glob/e": b"e\n", "/tree/sub/d.txt": b"d\n"}


def test_an_input_that_cannot_be_fetched_ends_the_task_system_error_saying_which_and_why(client, web):
    task_id = client.create_task(tes.Task(
        name="tes-404", inputs=[tes.Input(path="/data/gone.txt", url=f"{web.url}/files/gone.txt")],
        executors=[sh("true")]))

    assert client.wait(task_id, timeout=30).state == "SYSTEM_ERROR"
    said = client.get_task(task_id, "FULL").logs[0].system_logs
    assert said[0] == f"TES input /data/gone.txt: {web.url}/files/gone.txt answered HTTP 404"


def test_a_node_without_a_sandbox_ends_tes_tasks_system_error_saying_it_needs_bwrap(client):
    task_id = client.create_task(tes.Task(name="tes-bare", executors=[sh("true", image="bare")]))

    assert client.wait(task_id, timeout=30).state == "SYSTEM_ERROR"
    assert "need sandbox = bwrap" in client.get_task(task_id, "FULL").logs[0].system_logs[0]
