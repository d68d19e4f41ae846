#!/usr/bin/env python3
"""Start the orchestrator server: `python run_server.py [--config conf/server.ini] [--port N]`."""
from __future__ import annotations

import signal

# NOTE: first of all: until main() installs the node's own handlers, Ctrl-C (or make's trap, or a
# background start that ignored SIGINT) simply ends the process, with no traceback of an import.
signal.signal(signal.SIGINT, signal.SIG_DFL)

import argparse
import logging
import os
import shutil
import sys

from actors.runtime.preflight import database_opened, free_to_listen, refusing, writable_folder
from conf.logs import LEVELS

STOP_GRACE_SECONDS = 5.0


def remove_orphan_folders(jobs_dir: str) -> None:
    """A crash between storing an upload and writing its row leaves a folder no job owns."""
    from storage import jobs

    known = jobs.folder_names()
    for name in os.listdir(jobs_dir):
        if name not in known:
            shutil.rmtree(os.path.join(jobs_dir, name), ignore_errors=True)


def prepare_database(config) -> None:
    from conf.summary import without_password
    from storage import database, executors
    from storage.models import db

    database_opened(lambda: database.bind(db, config.database_url, create_tables=True),
                    without_password(config.database_url))
    remove_orphan_folders(config.jobs_path)
    # NOTE: before the actors: no executor has been heard from by this server yet.
    executors.server_started({url: service.name for service in config.services for url in service.clients})


def make_app(config, gateway, stopping):
    # NOTE: imported once the actor system runs, so its forked processes do not carry the web stack.
    from web.server_app import create_app

    return create_app(config, gateway, stopping)


def executor_addresses(config):
    """The executors' addresses (configured and registered): the share of connections kept for the
    cluster is kept for their reports and heartbeats."""
    from storage import executors
    from web.connections import CachedAddresses

    configured = [url for service in config.services for url in service.clients]
    return CachedAddresses(lambda: configured + executors.urls())


def start_checks(config) -> None:
    """Refuse to start (preflight.Refused) unless the port is free, and the data folder (and a SQLite
    database's folder) can be written."""
    free_to_listen(config.host, config.port, "[server]")
    writable_folder("[server] data_dir", config.data_dir)
    if config.database and "://" not in config.database:
        writable_folder("[server] database", os.path.dirname(os.path.abspath(config.database)))


def log_start(config) -> None:
    from conf.summary import describe_server
    from conf.version import VERSION

    logging.getLogger("orchestrator").info("%s", describe_server(config, VERSION))


def options(exit_on_error: bool = True) -> argparse.ArgumentParser:
    """The command line; the image's entrypoint reads it too (deploy/container/entrypoint.py)."""
    parser = argparse.ArgumentParser(description=__doc__, exit_on_error=exit_on_error)
    parser.add_argument("--config", default="conf/server.ini", help="INI file (default: conf/server.ini)")
    parser.add_argument("--port", type=int, help="HTTP port, overriding [server] port")
    parser.add_argument("--log-level", choices=tuple(LEVELS),
                        help="least severe lines logged, overriding log_level of the file")
    return parser


def load_config(args: argparse.Namespace, environ):
    """The configuration the command line names, with the environment's overrides (ConfigError)."""
    from conf.settings import load_server_config

    return load_server_config(args.config, environ, port=args.port, log_level=args.log_level)


def main(argv: list[str] | None = None) -> int:
    # NOTE: imported here, not at the top: a missing package is then refused in one sentence (refusing).
    from actors.runtime.serving import install_signal_handlers, run_node, setup_logging

    install_signal_handlers()
    args = options().parse_args(argv)
    setup_logging()

    from actors.messages import Configure
    from conf import logs, metrics
    from conf.settings import ConfigError, is_loopback

    try:
        config = load_config(args, os.environ)
    except ConfigError as exc:
        print(f"run_server.py: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format)
    start_checks(config)
    log_start(config)
    for folder in (config.jobs_path, config.results_path):
        os.makedirs(folder, exist_ok=True)
    # NOTE: a fetch cut short by a crash leaves its temporary file; the result is fetched again.
    for name in os.listdir(config.results_path):
        if ".part" in name:
            os.remove(os.path.join(config.results_path, name))
    # NOTE: uploads interrupted by a crash leave half-written folders here; none has a job row.
    shutil.rmtree(config.incoming_path, ignore_errors=True)
    # NOTE: before the actor system forks its processes, so that they count into the same folder.
    metrics.prepare(config.data_dir, [service.name for service in config.services])
    if config.allow_anonymous and not config.tokens and not is_loopback(config.host):
        logging.getLogger("orchestrator").warning(
            "serving anonymously on %s: anyone who can connect may submit jobs (allow_anonymous = true)", config.host)
    return run_node(
        prepare=lambda: prepare_database(config),
        state_dir=config.data_dir, admin_port=config.actor_admin_port,
        actor_class="actors.server.supervisor.SupervisorActor", configure_message=Configure(config),
        make_app=lambda gateway, stopping: make_app(config, gateway, stopping),
        host=config.host, port=config.port, threads=config.threads,
        max_body=config.max_upload_mb * 1024 * 1024, name="orchestrator-server",
        connections=config.connections, reserved_for=executor_addresses(config),
        # Stopping: uploads get 503 while the requests under way finish (at most STOP_GRACE s).
        settled=lambda gateway, requests: requests.count == 0, settle_seconds=STOP_GRACE_SECONDS,
        section="[server]",
    )


if __name__ == "__main__":
    sys.exit(refusing("run_server.py", main))
