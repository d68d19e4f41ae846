"""GA4GH TES 1.1 under the portal API's rules, from py-tes 1.1.4 against real processes (issue 16):
portal tokens and tenant isolation, the per-user quota holding TES tasks as it holds uploads, and the
cancel of a running task. One module cluster with two portals; `example` runs one job per user.
"""
from __future__ import annotations

import os

import pytest
import requests
import tes

from tests.harness import (add_section, bearer, job, job_folder, let_go, processes_with_marker, submit,
                           wait_for_outcome, wait_until, waiting_for_flag)

ONE, OTHER = "tes-portal-one-token", "tes-portal-other-token"
SECRET = "tes-tenancy-cluster-secret"


@pytest.fixture(scope="module")
def executor(module_cluster):
    return module_cluster.executor("example", cluster_secret=SECRET)


@pytest.fixture(scope="module")
def server(module_cluster, executor):
    node = module_cluster.server({"example": {"clients": executor.url, "runs_per_user": 1}},
                                 tokens={"one": ONE, "other": OTHER}, cluster_secret=SECRET, start=False)
    return add_section(node, "tes", {"images": "alpine=example"}).start()


@pytest.fixture(scope="module")
def one(server):
    return tes.HTTPClient(server.url, token=ONE, timeout=10)


@pytest.fixture(scope="module")
def other(server):
    return tes.HTTPClient(server.url, token=OTHER, timeout=10)


def waiting_task(token: str, user_id: str | None = None) -> tes.Task:
    """A task whose one command waits for the test's `go` file in its job folder."""
    return tes.Task(name=token, tags={"user_id": user_id} if user_id else None,
                    executors=[tes.Executor(image="alpine", command=["sh", "-c", waiting_for_flag(token)])])


def test_tasks_need_a_portal_token_and_a_portal_sees_only_its_own(server, one, other):
    task_id = one.create_task(tes.Task(name="tenant-one", executors=[tes.Executor(image="alpine", command=["true"])]))

    assert requests.get(f"{server.url}/ga4gh/tes/v1/tasks", timeout=10).status_code == 401
    assert requests.get(f"{server.url}/ga4gh/tes/v1/tasks/{task_id}", headers=bearer(OTHER), timeout=10).status_code == 404
    assert requests.post(f"{server.url}/ga4gh/tes/v1/tasks/{task_id}:cancel", headers=bearer(OTHER),
                         timeout=10).status_code == 404
    assert task_id not in [t.id for t in other.list_tasks(view="MINIMAL").tasks]
    assert task_id in [t.id for t in one.list_tasks(view="MINIMAL").tasks]
    assert one.wait(task_id, timeout=30).state == "COMPLETE"


def test_the_quota_holds_a_tes_task_behind_its_users_running_upload_and_not_another_users(server, executor, one):
    upload = submit(server, waiting_for_flag("tes-quota-upload"), user_id=5, token=ONE)
    wait_until(lambda: job(server, upload, ONE)["status"] == "Running", 20, 0.05, "the upload running")

    same_user = one.create_task(waiting_task("tes-quota-same", "5"))
    other_user = one.create_task(tes.Task(name="tes-quota-other", tags={"user_id": "6"},
                                          executors=[tes.Executor(image="alpine", command=["true"])]))

    assert one.wait(other_user, timeout=30).state == "COMPLETE"
    assert one.get_task(same_user, "MINIMAL").state == "QUEUED"  # user 5's one run is the upload's
    let_go(executor.folder, "tes-quota-upload")
    assert wait_for_outcome(server, upload, token=ONE) == 200
    wait_until(lambda: one.get_task(same_user, "MINIMAL").state == "RUNNING", 20, 0.05, "user 5's task running")
    let_go(executor.folder, "tes-quota-same")
    assert one.wait(same_user, timeout=30).state == "COMPLETE"


def test_a_running_task_is_cancelled_and_its_commands_stop(server, executor, one):
    task_id = one.create_task(waiting_task("tes-cancel-running", "8"))
    wait_until(lambda: one.get_task(task_id, "MINIMAL").state == "RUNNING", 20, 0.05, "the task running")
    folder = job_folder(executor.folder, "tes-cancel-running")
    assert commands_in(executor, folder)

    one.cancel_task(task_id)

    assert one.wait(task_id, timeout=30).state == "CANCELED"
    wait_until(lambda: not commands_in(executor, folder), 20, 0.05, "the task's commands gone")


def commands_in(executor, folder) -> list[int]:
    """The processes of the executor's jobs working in `folder`."""
    def cwd(pid: int) -> str:
        try:
            return os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return ""
    return [pid for pid in processes_with_marker(executor.marker) if cwd(pid).startswith(str(folder))]
