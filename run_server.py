#!/usr/bin/env python3
"""Start the orchestrator server: `python run_server.py [--config conf/server.ini] [--port N]`."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys

from actors.runtime.serving import install_signal_handlers, run_node, setup_logging
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
    from storage import database
    from storage.models import db

    database.bind(db, config.database_url, create_tables=True)
    remove_orphan_folders(config.jobs_path)


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


def main(argv: list[str] | None = None) -> int:
    install_signal_handlers()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="conf/server.ini", help="INI file (default: conf/server.ini)")
    parser.add_argument("--port", type=int, help="HTTP port, overriding [server] port")
    parser.add_argument("--log-level", choices=tuple(LEVELS),
                        help="least severe lines logged, overriding log_level of the file")
    args = parser.parse_args(argv)
    setup_logging()

    from actors.messages import Configure
    from conf import logs
    from conf.settings import ConfigError, is_loopback, load_server_config

    try:
        config = load_server_config(args.config, os.environ, port=args.port, log_level=args.log_level)
    except ConfigError as exc:
        print(f"run_server.py: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format)
    for folder in (config.jobs_path, config.results_path):
        os.makedirs(folder, exist_ok=True)
    # NOTE: a fetch cut short by a crash leaves its temporary file; the result is fetched again.
    for name in os.listdir(config.results_path):
        if ".part" in name:
            os.remove(os.path.join(config.results_path, name))
    # NOTE: uploads interrupted by a crash leave half-written folders here; none has a job row.
    shutil.rmtree(config.incoming_path, ignore_errors=True)
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
    )


if __name__ == "__main__":
    sys.exit(main())
