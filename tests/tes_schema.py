"""The GA4GH TES 1.1 OpenAPI document (tests/tes/) as a checker of answers: an in-process
falcon.testing result (tests/test_tes_fast.py) or a real server's requests.Response
(tests/test_tes.py) is validated against the spec's schema of its path and method. Not a test module."""
from __future__ import annotations

import io
import json
import os

import requests
import schemathesis
import urllib3

SPEC = schemathesis.openapi.from_path(os.path.join(os.path.dirname(__file__), "tes", "tes-1.1.0.openapi.yaml"))
STATES = SPEC.raw_schema["components"]["schemas"]["tesState"]["enum"]


def check_schema(result, path: str, method: str = "GET", view: str | None = None) -> None:
    """`result` (a falcon.testing result or a requests.Response) is what the spec allows for
    `method` on `path` (the spec's template, e.g. "/tasks/{id}"); `view`: the task view asked for.

    A MINIMAL task is exactly {id, state}, which the spec's tesTask schema refuses (it requires
    `executors`: a known spec bug, ga4gh/task-execution-schemas#136): its tasks are checked for
    those two keys, then validated with an empty `executors` added."""
    response = result if isinstance(result, requests.Response) else \
        _response(result.status_code, result.content, dict(result.headers.items()), path, method)  # falcon.testing
    if view == "MINIMAL":
        body = response.json()
        for task in body["tasks"] if path == "/tasks" else [body]:
            assert set(task) == {"id", "state"} and task["state"] in STATES, task
            task["executors"] = []
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        response = _response(response.status_code, json.dumps(body).encode(), headers, path, method)
    SPEC[path][method].validate_response(response)


def _response(status: int, content: bytes, headers: dict[str, str], path: str, method: str) -> requests.Response:
    """An answer as the requests.Response schemathesis validates."""
    response = requests.Response()
    response.status_code, response._content = status, content
    response.headers.update(headers)
    # NOTE: schemathesis reads the headers from the raw urllib3 response.
    response.raw = urllib3.HTTPResponse(body=io.BytesIO(content), headers=headers, status=status)
    response.request = requests.Request(method, f"http://test/ga4gh/tes/v1{path}").prepare()
    return response
