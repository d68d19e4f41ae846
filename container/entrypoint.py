"""The image's entrypoint (under tini): `server [ARGS]` or `executor --service NAME [ARGS]`.

Reads /etc/orchestrator/server.ini or client.ini (mount your own over them, or name another with
--config), applies the environment variables below to a private copy of it, writes the node's
/health URL for the HEALTHCHECK, then execs the node, so it gets SIGTERM directly from tini.

Environment (besides the ones the nodes read themselves: SERVICE_<NAME>_RUNS_PER_USER,
SERVICE_<NAME>_MAX_RUNS, SERVICE_<NAME>_UPLOAD_URL, MAX_AGE, DATA_PATH, DB_PATH):
  CLUSTER_SECRET (or CLUSTER_SECRET_FILE)  [server]/[client] cluster_secret
  SERVER_URL                               [client] server_url
  ADVERTISE_URL                            [client] advertise_url
  LOG_LEVEL, LOG_FORMAT                    log_level, log_format of either node
Anything else (any other argument) is run as a command.
"""
from __future__ import annotations

import configparser
import os
import sys

NODES = {"server": ("server", "run_server.py"), "executor": ("client", "run_client.py"),
         "client": ("client", "run_client.py")}


def option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def main(argv: list[str]) -> None:
    role, args = (argv[0], argv[1:]) if argv else ("server", [])
    if role not in NODES:
        os.execvp(role, [role, *args])
    section, script = NODES[role]
    path = option(args, "--config") or f"/etc/orchestrator/{section if section == 'server' else 'client'}.ini"
    args = [a for i, a in enumerate(args)
            if not (a == "--config" or a.startswith("--config=") or (i and args[i - 1] == "--config"))]
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # token names keep their case
    if not parser.read(path):
        sys.exit(f"entrypoint: cannot read the configuration {path} (mount it, or name one with --config)")
    if not parser.has_section(section):
        parser.add_section(section)
    secret = os.environ.get("CLUSTER_SECRET", "")
    if os.environ.get("CLUSTER_SECRET_FILE"):
        with open(os.environ["CLUSTER_SECRET_FILE"], encoding="utf-8") as f:
            secret = f.read().strip()
    overrides = {"cluster_secret": secret, "log_level": os.environ.get("LOG_LEVEL", ""),
                 "log_format": os.environ.get("LOG_FORMAT", "")}
    if section == "client":
        overrides.update(server_url=os.environ.get("SERVER_URL", ""), advertise_url=os.environ.get("ADVERTISE_URL", ""))
    for key, value in overrides.items():
        if value:
            parser.set(section, key, value)
    own = f"/tmp/orchestrator-{role}.ini"
    fd = os.open(own, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        parser.write(f)
    port = option(args, "--port") or parser.get(section, "port", fallback="5000" if section == "server" else "9000")
    # An executor answers /health with the cluster secret only: the check sends it (file mode 0600).
    fd = os.open("/tmp/orchestrator-health-url", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"http://127.0.0.1:{port}/health\n{parser.get(section, 'cluster_secret', fallback='')}\n")
    os.chdir("/app")
    os.execv(sys.executable, [sys.executable, "-u", f"/app/{script}", "--config", own, *args])


if __name__ == "__main__":
    main(sys.argv[1:])
