"""The server's OpenAPI 3.1 document, and Swagger UI served from the locally installed package.

The document is built from the configuration (the services a caller may name), so it states
exactly what this server accepts. Swagger UI's files come from the `swagger-ui-bundle-v2` wheel:
no CDN, so the page works on an isolated network.
"""
from __future__ import annotations

import mimetypes
import os

import falcon

from conf.settings import MAX_TIER, ServerConfig
from storage import feed_cursors, public_ids
from storage.fair_share import GROUP, GROUP_RULE, PRIORITIES
from storage.states import JobState
from web.common import DEFAULT_LIMIT, MAX_ID, MAX_JSON_BYTES, MAX_LIMIT
from web.folder_reads import MAX_TAIL_LINES
from web.log_query import DEFAULT_TAIL

ERROR = {"type": "object", "required": ["title"], "properties": {
    "title": {"type": "string"}, "description": {"type": "string"}}}


#: The query of GET /jobs/{job_id}/log: tail or offset, not both (web/log_query.py).
LOG_PARAMETERS = [
    {"name": "stream", "in": "query", "schema": {"enum": ["stdout", "stderr"], "default": "stdout"}},
    {"name": "tail", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_TAIL_LINES,
                                                "default": DEFAULT_TAIL},
     "description": "the last N lines (of at most the last MiB)"},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
     "description": "instead of tail (it wins over tail): the bytes from this one on (at most a MiB)"}]


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(description: str, ref: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _json_body(ref: str) -> dict:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _stamp() -> dict:
    return {"type": ["string", "null"], "format": "date-time"}


def _job_id(config: ServerConfig) -> dict:
    """How this server names jobs: by number without portal tokens, by public id with them."""
    number = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
    about = (f"Without portal tokens, a job's number. With tokens, a job's public id: {public_ids.DESCRIPTION} "
             f"(random; never all digits); a job accepted before public ids existed keeps its number.")
    if not config.tokens:
        return {**number, "description": about}
    return {"anyOf": [{"type": "string", "pattern": public_ids.PATTERN}, number], "description": about}


def document(config: ServerConfig) -> dict:
    services = [s.name for s in config.services]
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": _job_id(config)}
    denied = {"401": _error("missing or wrong bearer token")}
    portal = [{"portalToken": []}] if config.tokens else [{}]
    secret = [{"clusterSecret": []}] if config.cluster_secret else []
    cluster = secret or [{}]
    # The operator views: an [operators] token or the cluster secret; with no token at all, loopback.
    operator = [{"operatorToken": []}, *secret] if config.tokens or config.operators else [{}]
    refused = {"403": _error("a portal token: this is an operator view")} if config.tokens else {}
    too_large = _error(f"a body over {MAX_JSON_BYTES} bytes")
    job_responses = {"400": _error("malformed job id"), "404": _error("no such job (or not this portal's)"), **denied}
    follow_responses = {
        **job_responses, "400": _error("malformed job id, file name or log query"),
        "409": _error("the job has not started (Queued, Dispatching): it has no folder yet"),
        "410": _error("the job's folder is gone (Cleaned, or never made)"),
        "502": _error("the job's executor answered with an error"),
        "503": {**_error("the job's executor does not answer, or the server is restarting"),
                "headers": {"Retry-After": {"schema": {"type": "integer"}}}}}
    spec = {
        "openapi": "3.1.0",
        "info": {"title": "orchestrator", "version": "0.1.0",
                 "description": "Queue jobs (run.sh plus inputs) for executor nodes, with fair per-user and "
                                "per-service quotas, and download their results as a zip."},
        "security": portal,
        "paths": {
            "/": {"get": {"summary": "Liveness", "security": [{}], "operationId": "ping",
                          "responses": {"200": _json("pong", "Pong")}}},
            "/health": {"get": {"summary": "Database and actor system health; the actors' processes only "
                                           "for the cluster secret (or with neither tokens nor secret)",
                                "security": [{}, *secret],
                                "operationId": "health",
                                "responses": {"200": _json("healthy", "Health"), "503": _json("unhealthy", "Health")}}},
            "/upload": {"post": {
                "summary": "Queue a job", "operationId": "upload",
                "requestBody": {"required": True, "content": {"multipart/form-data": {
                    "schema": {"type": "object", "required": ["user_id", "service", "file"], "properties": {
                        "user_id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                        "service": {"type": "string", "enum": services},
                        "callback_url": {"type": "string", "format": "uri", "maxLength": 2000,
                                         "description": "where to POST the job (signed, Standard Webhooks) when it "
                                                        "starts running and when it ends; its host must match "
                                                        "[server] webhook_hosts"},
                        "max_runtime": {"type": "integer", "minimum": 1,
                                        "description": "seconds the job may run before it is stopped and fails "
                                                       "with the reason \"time limit (N s)\"; at most the "
                                                       "service's max_runtime, which applies when this is absent"},
                        "priority": {"type": "integer", "minimum": PRIORITIES.start, "maximum": PRIORITIES.stop - 1,
                                     "default": 0,
                                     "description": "orders the user's own queued jobs (higher first, then first "
                                                    "in, first out); it never lets a user pass others"},
                        "group": {"type": "string", "pattern": "^" + GROUP.pattern + "$",
                                  "description": "the portal's label for a set of users (a course, a project); "
                                                 "the service's runs_per_group caps its active jobs"},
                        "file": {"type": "array", "minItems": 1, "maxItems": config.max_files,
                                 "items": {"type": "string", "format": "binary"},
                                 "description": "the job's files, run.sh among them; stored under their base names"},
                    }, "additionalProperties": False}}}},
                "responses": {
                    "200": {**_json("queued", "Job"), "links": {
                        "job": {"operationId": "job", "parameters": {"job_id": "$response.body#/id"}},
                        "download": {"operationId": "download", "parameters": {"job_id": "$response.body#/id"}},
                        "downloadStatus": {"operationId": "downloadStatus",
                                           "parameters": {"job_id": "$response.body#/id"}}}},
                    "400": _error("a field or file is missing or invalid (two files may not share a name)"),
                    **denied,
                    "411": _error("no Content-Length"), "413": _error("more than max_upload_mb or max_files"),
                    "415": _error("not multipart/form-data"),
                    "429": {**_error("the user has max_queued_per_user jobs waiting"),
                            "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
                    "503": _error("the server is stopping, its actor system is restarting, or its database is locked "
                                  "by another process; send it again after Retry-After seconds"),
                    "507": _error("the server's disk is full")}}},
            "/download/{job_id}": {
                "parameters": [job_id],
                "get": {"summary": "Results as a zip (or the job's progress)", "operationId": "download",
                        "responses": {
                            "200": {"description": "completed: the job folder",
                                    "content": {"application/zip": {"schema": {"type": "string",
                                                                                "contentMediaType": "application/zip"}}}},
                            "202": _json("queued, dispatching, submitted or running", "Progress"),
                            "204": {"description": "failed, cancelled or cleaned: no results"}, **job_responses}},
                "head": {"summary": "The download's status without a body", "operationId": "downloadStatus",
                         "responses": {"200": {"description": "completed"}, "202": {"description": "waiting"},
                                       "204": {"description": "failed, cancelled or cleaned"},
                                       "400": {"description": "malformed job id"},
                                       "401": {"description": "missing or wrong bearer token"},
                                       "404": {"description": "no such job"}}}},
            "/jobs": {"get": {
                "summary": "The caller's jobs, newest first, filtered; paged by next_cursor" + (
                    " (a portal: its own jobs; an operator: every portal's)" if config.tokens else ""),
                "operationId": "listJobs", "parameters": job_list_parameters(config),
                "responses": {"200": {**_json("a page of jobs", "JobList"), "links": {"nextPage": {
                    "operationId": "listJobs", "parameters": {"cursor": "$response.body#/next_cursor"}}}},
                              "400": _error("an unknown parameter, a bad filter, or a cursor this server did not "
                                            "give"), **denied}}},
            "/jobs/{job_id}": {"parameters": [job_id], "get": {
                "summary": "A job's state and history", "operationId": "job",
                "responses": {"200": _json("the job", "Job"), **job_responses}}},
            "/jobs/{job_id}/cancel": {"parameters": [job_id], "post": {
                "summary": "Cancel a job that has not ended (its script is stopped if it runs)",
                "operationId": "cancel",
                "responses": {"200": _json("the job, now Cancelled", "Job"),
                              "409": _error("the job had ended already"), **job_responses}}},
            "/terminate/{job_id}": {"parameters": [job_id], "post": {
                "summary": "Cancel a job that has not ended: the newer original's name for /jobs/{job_id}/cancel",
                "operationId": "terminate",
                "responses": {"200": _json("the job, now Cancelled", "Job"),
                              "409": _error("the job had ended already"), **job_responses}}},
            "/jobs/{job_id}/log": {"parameters": [job_id, *LOG_PARAMETERS], "get": {
                "summary": "The last lines of a job's stdout or stderr, or its bytes from an offset: from its "
                           "executor while it runs, from its results once it ended",
                "operationId": "jobLog",
                "responses": {"200": {"description": "the lines or bytes (none before the script wrote any)",
                                      "headers": {"X-Log-Size": {"schema": {"type": "integer"}, "description": (
                                          "where this answer ends in the log: ask next with offset=X-Log-Size")}},
                                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                              **follow_responses}}},
            "/jobs/{job_id}/files/{name}": {"parameters": [job_id, {
                "name": "name", "in": "path", "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 4096},
                "description": "a file's path inside the job's folder (e.g. out/result.txt); links are not followed"}],
                "get": {"summary": "A file of the job's folder as it is now (its results' once it ended)",
                        "operationId": "jobFile",
                        "responses": {"200": {"description": "the file's bytes", "content": {
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                            "text/plain": {"schema": {"type": "string"}}}},
                            "403": _error("a link, or not a regular file"), **follow_responses}}},
            "/download_partial/{job_id}": {"parameters": [job_id], "get": {
                "summary": "A zip of the job's folder as it is now (its results once it ended)",
                "operationId": "downloadPartial",
                "responses": {"200": {"description": "the job folder so far", "content": {"application/zip": {
                    "schema": {"type": "string", "contentMediaType": "application/zip"}}}}, **follow_responses,
                    "429": {**_error("a partial zip of this job (or two of others) is being made on its executor"),
                            "headers": {"Retry-After": {"schema": {"type": "integer"}}}}}}},
            "/executors": {"get": {
                "summary": "The executors the server knows: an operator view",
                "operationId": "executors", "security": operator,
                "responses": {"200": _json("executors", "Executors"), **denied, **refused}}},
            "/metrics": {"get": {
                "summary": "Prometheus metrics: an operator view" + (", open to anyone (metrics_public)"
                                                                     if config.metrics_public else ""),
                "operationId": "metrics", "security": [{}] if config.metrics_public else operator,
                "responses": {"200": {"description": "Prometheus' text format", "content": {
                    "text/plain": {"schema": {"type": "string"}}}},
                              **({} if config.metrics_public else {**denied, **refused})}}},
            "/services": {"get": {
                "summary": "Per service: queued, active and last-hour counts, users waiting, limits, executors, "
                           "median wait and run times" + (" (a portal: its own jobs only, no executors; an operator: "
                                                          "every job)" if config.tokens else ""),
                "operationId": "services", "security": portal,
                "responses": {"200": _json("the services", "Services"), **denied}}},
            "/status": {"get": {
                "summary": "The status page: services, executors, recent failures, the last hour's throughput: "
                           "an operator view (a browser asks for the token as the password: HTTP Basic)",
                "operationId": "statusPage", "security": operator,
                "responses": {"200": {"description": "an HTML page", "content": {"text/html": {"schema": {
                    "type": "string"}}}}, **denied, **refused}}},
            "/internal/events": {"post": {
                "summary": "An executor reports jobs' starts or ends: one event, or {events: [...]}",
                "operationId": "executorEvent",
                "security": cluster,
                "requestBody": _json_body("ExecutorEvents"),
                "responses": {"202": _json("accepted", "Accepted"), "400": _error("malformed report"),
                              "401": _error("missing or wrong cluster secret"), "413": too_large,
                              "415": _error("not JSON")}}},
            "/internal/executors": {"post": {
                "summary": "An executor registers or sends a heartbeat", "operationId": "executorHeartbeat",
                "security": cluster,
                "requestBody": _json_body("Heartbeat"),
                "responses": {"200": _json("registered", "HeartbeatAnswer"), "400": _error("malformed heartbeat"),
                              "401": _error("missing or wrong cluster secret"),
                              "404": _error("the service is not configured here"), "413": too_large,
                              "415": _error("not JSON")}}},
        },
        "components": {
            "securitySchemes": {
                "portalToken": {"type": "http", "scheme": "bearer",
                                "description": "one token per portal, from [tokens] in server.ini"},
                "clusterSecret": {"type": "http", "scheme": "bearer",
                                  "description": "cluster_secret shared by the server and its executors"},
                "operatorToken": {"type": "http", "scheme": "bearer",
                                  "description": "one token per operator, from [operators] in server.ini"}},
            "schemas": {
                "Error": ERROR,
                "Pong": {"type": "object", "required": ["message"], "properties": {"message": {"const": "pong"}}},
                "Health": {"type": "object", "required": ["status", "database", "actors"], "properties": {
                    "status": {"enum": ["ok", "restarting", "unavailable"]},
                    "database": {"enum": ["ok", "locked", "unavailable", "unknown"]},
                    "actors": {"enum": ["ok", "restarting", "unavailable"]},
                    "reason": {"type": "string", "description": "why it is not ok (503 only)"},
                    "actor_processes": {"type": "object", "additionalProperties": {"type": "integer"},
                                        "description": "each actor's process id: only for a caller presenting the "
                                                       "cluster secret, or on a server with neither portal tokens "
                                                       "nor a cluster secret"}}},
                "Progress": {"type": "object", "required": ["id", "status"], "properties": {
                    "id": _job_id(config), "status": {"type": "string"}}},
                "Job": {"type": "object", "required": ["id", "user_id", "service", "status", "attempts"], "properties": {
                    "id": _job_id(config), "user_id": {"type": "integer"}, "service": {"type": "string"},
                    "status": {"enum": ["Queued", "Dispatching", "Submitted", "Running", "Completed", "Failed",
                                        "Cancelled", "Cleaned"]},
                    "outcome": {"type": ["string", "null"]}, "created_at": _stamp(), "dispatched_at": _stamp(),
                    "started_at": _stamp(), "finished_at": _stamp(), "cleaned_at": _stamp(),
                    "attempts": {"type": "integer"}, "executor": {"type": ["string", "null"]},
                    "exit_code": {"type": ["integer", "null"]}, "reason": {"type": ["string", "null"]},
                    "stderr_tail": {"type": ["string", "null"]},
                    "max_runtime": {"type": ["integer", "null"],
                                    "description": "seconds it may run (the upload's, else its service's)"},
                    "priority": {"type": "integer", "description": "as uploaded (0 when none was sent)"},
                    "group": {"type": ["string", "null"], "description": "as uploaded"},
                    "queue": {"$ref": "#/components/schemas/Queue"}}},
                "Queue": {
                    "type": "object", "description": "only while the job has not started (Queued, Dispatching)",
                    "required": ["position", "position_for_user", "waiting_for", "detail", "estimated_start"],
                    "properties": {
                        "position": {"type": "integer", "minimum": 0,
                                     "description": "1: next to start in its service (users take turns, one job "
                                                    "each, in the order of their policy rank); 0: admitted "
                                                    "(Dispatching), being sent to an executor"},
                        "position_for_user": {"type": "integer", "minimum": 0,
                                              "description": "among its user's own queued jobs"},
                        "waiting_for": {"enum": ["runs_per_user", "runs_per_group", "max_runs", "executors_full",
                                                 "no_executor", "draining", None],
                                        "description": "what holds it (null: only its turn)"},
                        "detail": {"type": "string", "description": "the same, in words"},
                        "estimated_start": {**_stamp(), "description": "from the service's recent run times; "
                                                                       "null without enough history"},
                        "policy": {
                            "type": "object", "required": ["name", "rank", "usage", "share"],
                            "description": "the service's scheduling policy as it sees the job's user",
                            "properties": {
                                "name": {"enum": ["round_robin", "fair_share"]},
                                "rank": {"type": "integer", "minimum": 0,
                                         "description": "the user's place among the service's users with queued "
                                                        "jobs in the order they are served (1: next; other "
                                                        "portals' users count, unnamed); 0: admitted"},
                                "usage": {"type": ["number", "null"],
                                          "description": "fair_share: the user's slot-seconds, decayed by the "
                                                         "service's half-life, with their active jobs' run so far; "
                                                         "null under round_robin"},
                                "share": {"type": ["integer", "null"],
                                          "description": "fair_share: the portal's share ([shares]); usage counts "
                                                         "divided by it; null under round_robin"}}}}},
                "JobList": {"type": "object", "required": ["jobs", "next_cursor"], "properties": {
                    "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                    "next_cursor": {"type": ["string", "null"],
                                    "description": "pass as cursor for the next page; null on the last page"}}},
                "Executors": {"type": "object", "required": ["executors"], "properties": {"executors": {
                    "type": "array", "items": {"type": "object", "properties": {
                        "url": {"type": "string"}, "service": {"type": "string"},
                        "state": {"enum": ["unknown", "alive", "draining", "lost", "gone"]},
                        "slots": {"type": "integer"}, "running": {"type": "integer"}, "registered": {"type": "boolean"},
                        "tier": {"type": ["integer", "null"],
                                 "description": "its overflow tier (null until it answered a probe)"},
                        "last_seen": _stamp(), "last_error": {"type": ["string", "null"]}}}}}},
                "Services": {"type": "object", "required": ["generated_at", "window_seconds", "services"], "properties": {
                    "generated_at": _stamp(), "window_seconds": {"type": "integer"},
                    "services": {"type": "array", "items": {"type": "object", "required": [
                        "name", "configured", "queued", "active", "finished_last_hour", "users_waiting",
                        "top_waiting_users", "limits", "executors", "median_wait_seconds", "median_run_seconds",
                        "policy", "groups_waiting", "groups", "top_usage_users"],
                        "properties": {
                            "name": {"type": "string"}, "configured": {"type": "boolean"},
                            "queued": {"type": "integer"}, "active": {"type": "integer"},
                            "finished_last_hour": {"type": "object", "additionalProperties": {"type": "integer"}},
                            "users_waiting": {"type": "integer"},
                            "top_waiting_users": {"type": "array", "items": {"type": "object", "properties": {
                                "portal": {"type": ["string", "null"]}, "user_id": {"type": "integer"},
                                "queued": {"type": "integer"}}}},
                            "limits": {"type": ["object", "null"], "properties": {
                                "runs_per_user": {"type": "integer"}, "max_runs": {"type": ["integer", "null"]},
                                "max_queued_per_user": {"type": ["integer", "null"]},
                                "max_runtime": {"type": ["integer", "null"]},
                                "runs_per_group": {"type": ["integer", "null"]}}},
                            "policy": {"enum": ["round_robin", "fair_share", None],
                                       "description": "null for a service no longer configured"},
                            "groups_waiting": {"type": "integer",
                                               "description": "groups with jobs queued or active"},
                            "groups": {"type": "array", "description": "the groups with the most jobs queued or "
                                                                       "active (a portal: its own only)",
                                       "items": {"type": "object", "properties": {
                                           "portal": {"type": ["string", "null"]}, "group": {"type": "string"},
                                           "queued": {"type": "integer"}, "active": {"type": "integer"}}}},
                            "top_usage_users": {
                                "type": ["array", "null"],
                                "description": "fair_share: the users with the most usage (slot-seconds, decayed; "
                                               "a portal: its own users only); null under round_robin",
                                "items": {"type": "object", "properties": {
                                    "portal": {"type": ["string", "null"]}, "user_id": {"type": "integer"},
                                    "usage": {"type": "number"}}}},
                            "executors": {"type": "array", "items": {"type": "object", "properties": {
                                "url": {"type": "string"}, "state": {"type": "string"},
                                "slots": {"type": "integer"}, "free_slots": {"type": "integer"},
                                "running": {"type": "integer"}, "tier": {"type": ["integer", "null"]},
                                "last_seen": _stamp()}}},
                            "median_wait_seconds": {"type": ["number", "null"]},
                            "median_run_seconds": {"type": ["number", "null"]}}}}}},
                "ExecutorEvent": {"type": "object", "required": ["job_id", "attempt", "event"], "properties": {
                    "job_id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                    "attempt": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
                    "event": {"enum": ["started", "finished", "lost", "cancelled"]},
                    "task_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 64},
                    "exit_code": {"type": ["integer", "null"], "minimum": -2**31, "maximum": 2**31 - 1},
                    "stderr_tail": {"type": ["string", "null"]}}},
                "ExecutorEvents": {"oneOf": [
                    {"allOf": [{"$ref": "#/components/schemas/ExecutorEvent"}, {"not": {"required": ["events"]}}]},
                    {"type": "object", "required": ["events"], "additionalProperties": False, "properties": {"events": {
                        "type": "array", "minItems": 1, "maxItems": 1000,
                        "items": {"$ref": "#/components/schemas/ExecutorEvent"}}}}]},
                "Accepted": {"type": "object", "properties": {"accepted": {"type": "boolean"}}},
                "Heartbeat": {"type": "object", "required": ["service", "url", "slots", "draining"], "properties": {
                    "service": {"type": "string"},
                    "url": {"type": "string", "pattern": "^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$", "maxLength": 1024},
                    "slots": {"type": "integer", "minimum": 1, "maximum": 4096}, "draining": {"type": "boolean"},
                    "tier": {"type": "integer", "minimum": 1, "maximum": MAX_TIER, "default": 1},
                    "tasks": {"type": "array", "maxItems": 100000, "items": {
                        "type": "array", "minItems": 3, "maxItems": 3, "prefixItems": [
                            {"type": "string", "maxLength": 64},
                            {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                            {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}]}},
                    "leaving": {"type": "boolean"}}},
                "HeartbeatAnswer": {"type": "object", "required": ["executor_timeout"],
                                    "properties": {"executor_timeout": {"type": "number"}}},
            },
        },
    }
    spec["paths"].update(_change_paths(job_id, job_responses, denied))
    spec["components"]["schemas"].update(_change_schemas())
    _group(spec)
    return spec


#: Swagger UI's sections, in its order: what portals call, what operators read, what only executors
#: call (a portal developer need not read past the first).
TAGS = ({"name": "portal", "description": "The API for portals: submit, follow and fetch jobs."},
        {"name": "operator", "description": "The operators' views (an operator token or the cluster secret)."},
        {"name": "node", "description": "Liveness and health, for load balancers and monitoring."},
        {"name": "executor (internal)", "description": "Called by executor nodes only, with the cluster secret."})
_NOT_PORTAL = {"/executors": "operator", "/metrics": "operator", "/status": "operator", "/": "node",
               "/health": "node", "/internal/events": "executor (internal)",
               "/internal/executors": "executor (internal)"}


def _group(spec: dict) -> None:
    """Tag every operation with its section (TAGS); a path not named in _NOT_PORTAL is the portals'."""
    spec["tags"] = list(TAGS)
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in ("get", "head", "post", "put", "delete"):
                operation["tags"] = [_NOT_PORTAL.get(path, "portal")]


def _change_paths(job_id: dict, job_responses: dict, denied: dict) -> dict:
    """`GET /events` (the change feed) and `GET /jobs/{id}/webhooks` (web/events.py)."""
    return {
        "/events": {"get": {
            "summary": "The caller's job state changes after a cursor, oldest first (an operator: every portal's)",
            "operationId": "events",
            "parameters": [
                {"name": "after", "in": "query", "schema": {"type": "string", "pattern": feed_cursors.PATTERN},
                 "description": "a next_cursor (or an event's cursor) from an earlier answer; left out: from the "
                                "oldest change kept"},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                                                            "default": DEFAULT_LIMIT}}],
            "responses": {"200": _json("the changes", "Events"), "400": _error("a cursor this server did not give, "
                                                                               "or a bad limit"),
                          "410": _error("changes after the cursor were pruned unread: re-sync with GET /jobs"),
                          **denied}}},
        "/jobs/{job_id}/webhooks": {"parameters": [job_id], "get": {
            "summary": "The job's webhooks (one per move to Running or an outcome) and how their attempts went",
            "operationId": "jobWebhooks",
            "responses": {"200": _json("the webhooks", "Webhooks"), **job_responses}}},
    }


def _change_schemas() -> dict:
    job = {"$ref": "#/components/schemas/Job"}
    return {
        "Events": {"type": "object", "required": ["events", "next_cursor"], "properties": {
            "events": {"type": "array", "items": {"type": "object", "required": ["cursor", "at", "status", "job"],
                                                  "properties": {
                "cursor": {"type": "string"}, "at": _stamp(), "status": {"type": "string"},  # job: as it is now
                "job": job}}},
            "next_cursor": {"type": "string"}}},
        "Webhooks": {"type": "object", "required": ["webhooks"], "properties": {"webhooks": {
            "type": "array", "items": {"type": "object", "properties": {
                "webhook_id": {"type": "string"}, "event": {"type": "string"}, "url": {"type": "string"},
                "attempts": {"type": "integer"}, "delivered_at": _stamp(), "gave_up_at": _stamp(),
                "next_attempt_at": _stamp(), "last_status": {"type": ["integer", "null"]},
                "last_error": {"type": ["string", "null"]}}}}}},
    }


def job_list_parameters(config: ServerConfig) -> list[dict]:
    """The query of `GET /jobs` (web/job_list.py); `portal` only where there are portals."""
    def query(name: str, schema: dict, description: str) -> dict:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    stamp = {"type": "string", "format": "date-time"}
    parameters = [
        query("user_id", {"type": "integer", "minimum": 1, "maximum": MAX_ID}, "only this user's jobs"),
        query("group", {"type": "string", "pattern": "^" + GROUP.pattern + "$"},
              "only jobs uploaded with this group, exactly (" + GROUP_RULE + ")"),
        query("service", {"type": "string", "enum": [s.name for s in config.services]},
              "only this service's jobs (a service no longer configured is accepted while it has jobs)"),
        {**query("status", {"type": "array", "items": {"enum": [state.value for state in JobState]}},
                 "only jobs in these states (repeat it, or separate states with commas)"),
         "style": "form", "explode": True},
        query("created_after", stamp, "only jobs created after this time (ISO 8601; without an offset: UTC)"),
        query("created_before", stamp, "only jobs created before this time (ISO 8601; without an offset: UTC)"),
        query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}, "jobs per page"),
        query("cursor", {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
              "the next_cursor of the previous page, unchanged (any other value: 400)")]
    if config.tokens:
        parameters.append(query("portal", {"type": "string", "enum": [name for name, _ in config.tokens]},
                                "an operator's filter: only this portal's jobs (a portal may name only itself)"))
    return parameters


class OpenApi:
    """`GET /api-docs/openapi.json`."""

    def __init__(self, config: ServerConfig):
        self.document = document(config)

    def on_get(self, req, resp):
        resp.media = self.document


class SwaggerUi:
    """`GET /swagger-ui/` and its assets, from the installed swagger-ui-bundle-v2 package."""

    INITIALIZER = ('window.onload = function () {\n  window.ui = SwaggerUIBundle({url: "/api-docs/openapi.json", '
                   'dom_id: "#swagger-ui", deepLinking: true, presets: [SwaggerUIBundle.presets.apis, '
                   'SwaggerUIStandalonePreset], layout: "StandaloneLayout"});\n};\n')

    def __init__(self):
        from swagger_ui_bundle import swagger_ui_path
        self.root = str(swagger_ui_path)
        self.files = {name for name in os.listdir(self.root) if not name.endswith((".map", ".j2"))}

    def on_get(self, req, resp, name: str = "index.html"):
        if name == "swagger-initializer.js":
            resp.content_type = "application/javascript"
            resp.text = self.INITIALIZER
            return
        if name not in self.files:
            raise falcon.HTTPNotFound(title="Not found", description=f"Swagger UI has no file {name!r}.")
        resp.content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        with open(os.path.join(self.root, name), "rb") as handle:
            resp.data = handle.read()

    def on_get_root(self, req, resp):
        raise falcon.HTTPMovedPermanently("/swagger-ui/")


def add_routes(app: falcon.App, config: ServerConfig) -> None:
    app.add_route("/api-docs/openapi.json", OpenApi(config))
    ui = SwaggerUi()
    app.add_route("/swagger-ui", ui, suffix="root")
    app.add_route("/swagger-ui/", ui)
    app.add_route("/swagger-ui/{name}", ui)
