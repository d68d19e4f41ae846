"""The image's entrypoint, which tini starts: `server [ARGS]` or `executor --service NAME [ARGS]`.

It runs in the container, before the node: it names the image's configuration
(/etc/orchestrator/server.ini or client.ini, unless ARGS has --config), writes where the node's own
/health answers for the HEALTHCHECK (healthcheck.py), then execs the node, so that the node is
tini's child and gets SIGTERM from it (a graceful stop; an executor drains).

The nodes read the environment themselves (conf/settings.py): CLUSTER_SECRET or CLUSTER_SECRET_FILE,
SERVER_URL, ADVERTISE_URL, LOG_LEVEL, LOG_FORMAT and the original's SERVICE_<NAME>_RUNS_PER_USER,
SERVICE_<NAME>_MAX_RUNS, SERVICE_<NAME>_UPLOAD_URL, MAX_AGE, DATA_PATH, DB_PATH.
Options alone (`--port 5001`) are the server's; any other first argument is run as a command (`sh`).
"""
from __future__ import annotations

import importlib
import os
import sys

APP = "/app"
NODES = {"server": ("run_server.py", "/etc/orchestrator/server.ini"),
         "executor": ("run_client.py", "/etc/orchestrator/client.ini")}
#: The node's /health URL and the secret an executor's /health asks for (mode 0600: the secret).
HEALTH_FILE = "/tmp/orchestrator-health"


def node_command(role: str, args: list[str], python: str = sys.executable) -> list[str]:
    """The node's command line: its script, the image's configuration unless --config names one."""
    script, config = NODES[role]
    named = any(arg == "--config" or arg.startswith("--config=") for arg in args)
    return [python, "-u", os.path.join(APP, script), *([] if named else ["--config", config]), *args]


def health_target(role: str, command: list[str], environ) -> tuple[str, str]:
    """The node's /health URL and its cluster secret, from the configuration the node will load: its
    own command line and loader (run_server.py, run_client.py), the same environment. An error
    (ArgumentError, ConfigError) is raised, and the node then reports it."""
    node = importlib.import_module(os.path.splitext(NODES[role][0])[0])
    known, _ = node.options(exit_on_error=False).parse_known_args(command[3:])  # the node refuses the rest
    config = node.load_config(known, environ)
    # The server's /health is public: its secret goes in no file.
    return f"http://127.0.0.1:{config.port}/health", config.cluster_secret if role == "executor" else ""


def main(argv: list[str]) -> None:
    # `IMAGE --port 5001`: options alone are the server's
    role, args = (argv[0], argv[1:]) if argv and not argv[0].startswith("-") else ("server", argv)
    if role not in NODES:
        os.execvp(role, [role, *args])
        return  # (execvp returns only where a test replaced it)
    command = node_command(role, args)
    sys.path.insert(0, APP)
    os.chdir(APP)
    try:
        url, secret = health_target(role, command, os.environ)
    except Exception:  # noqa: BLE001 - the node reports a bad configuration itself, in one sentence
        url, secret = "", ""
    fd = os.open(HEALTH_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(f"{url}\n{secret}\n")
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
