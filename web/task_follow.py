"""An executor node's view of a task's folder while it runs, for the server only (cluster secret):
`GET /jobs/{id}/files/{name}`, `GET /jobs/{id}/log?stream=&tail=|offset=`, `GET /retrieve_partial/{id}`.

Runs in the executor node's main process (web/executor_app.py adds the routes). The server passes
these on to portals (web/follow.py). Names are checked and files opened by web/folder_reads.py
(never through a link); the partial zip is web/result_zip.py's, written aside and unlinked once open,
so nothing is left behind whatever happens to the request.
"""
from __future__ import annotations

import os
import threading
import uuid
from typing import Callable

import falcon

from conf.settings import ClientConfig
from storage.node import tasks
from storage.node.states import TaskState
from web.folder_reads import Refused, components, content_type, open_inside, sent
from web.log_query import log_query, send_log
from web.result_zip import zip_folder


def _opened(folder: str, name: str):
    """`name` below the folder open for reading; 403 for a link or what is not a regular file."""
    try:
        return open_inside(folder, name)
    except Refused as exc:
        raise falcon.HTTPForbidden(title="Not a file of the job", description=str(exc)) from None


class TaskFollow:
    """The three routes on a task's folder. `number`: a path's task id as a task number (400 when it is not one)."""

    #: Partial zips made at once on the node: each is a whole copy of a folder on its disk.
    MAX_PARTIALS = 2

    def __init__(self, config: ClientConfig, number: Callable[[str], int]):
        self.config = config
        self.number = number
        self.partials: set[str] = set()  # the tasks whose partial zip is being made
        self.partials_lock = threading.Lock()

    def folder(self, raw_id: str) -> str:
        """The task's folder: 404 for no such task, 410 once its data was deleted."""
        number = self.number(raw_id)
        task = tasks.find(number)
        if task is None:
            raise falcon.HTTPNotFound(title="Unknown task", description=f"there is no task {number}.")
        if task["state"] == TaskState.CLEANED.value:
            raise falcon.HTTPGone(title="Task cleaned", description=f"task {number}'s folder was deleted.")
        return task["dir"]

    def on_get_file(self, req, resp, task_id, name):
        try:
            components(name)
        except Refused as exc:
            raise falcon.HTTPBadRequest(title="Invalid file name", description=str(exc)) from None
        folder = self.folder(task_id)
        try:
            handle = _opened(folder, name)
        except FileNotFoundError:
            raise falcon.HTTPNotFound(title="No such file",
                                      description=f"the job's folder has no file {name[:80]!r} (yet).") from None
        resp.content_type = content_type(name)
        size = os.fstat(handle.fileno()).st_size
        resp.content_length = size
        resp.stream = sent(handle, size)

    def on_get_log(self, req, resp, task_id):
        query = log_query(req)
        folder = self.folder(task_id)
        try:
            handle = _opened(folder, query.file)
        except FileNotFoundError:  # the script has not started: no log yet
            send_log(resp, None, 0, query)
            return
        with handle:
            send_log(resp, handle, os.fstat(handle.fileno()).st_size, query)

    def on_get_partial(self, req, resp, task_id):
        folder = self.folder(task_id)
        with self.partials_lock:
            if task_id in self.partials or len(self.partials) >= self.MAX_PARTIALS:
                raise falcon.HTTPTooManyRequests(
                    title="Partial zip under way", retry_after=5,
                    description=f"this node makes {self.MAX_PARTIALS} partial zips at a time, one per task; "
                                "ask again in a few seconds.")
            self.partials.add(task_id)
        try:
            path = os.path.join(self.config.zips_path, f"partial-{uuid.uuid4().hex}.zip")
            zip_folder(folder, path)
        finally:
            with self.partials_lock:
                self.partials.discard(task_id)
        handle = open(path, "rb")
        os.remove(path)  # NOTE: the open handle keeps it readable; nothing is left if the request dies
        resp.content_type = "application/zip"
        resp.downloadable_as = f"task-{task_id}-partial.zip"
        resp.content_length = os.fstat(handle.fileno()).st_size
        resp.stream = handle
