#!/usr/bin/env python3
"""Start an executor node: `python run_client.py --service NAME [--config conf/client.ini] [--port N]
[--backend local|slurm] [--tier N]`."""
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


def options(exit_on_error: bool = True) -> argparse.ArgumentParser:
    """The command line; the image's entrypoint reads it too (deploy/container/entrypoint.py)."""
    parser = argparse.ArgumentParser(description=__doc__, exit_on_error=exit_on_error)
    parser.add_argument("--service", help="the service this node runs jobs for, overriding [client] service")
    parser.add_argument("--config", default="conf/client.ini", help="INI file (default: conf/client.ini)")
    parser.add_argument("--port", type=int, help="HTTP port, overriding [client] port")
    parser.add_argument("--backend", help="where jobs run: local or slurm, overriding [client] backend")
    parser.add_argument("--tier", type=int, help="overflow tier (1 is filled first), overriding [client] tier")
    parser.add_argument("--log-level", choices=tuple(LEVELS),
                        help="least severe lines logged, overriding log_level of the file")
    return parser


def load_config(args: argparse.Namespace, environ):
    """The configuration the command line names, with the environment's overrides (ConfigError)."""
    from conf.settings import load_client_config

    return load_client_config(args.config, environ, service=args.service, port=args.port, backend=args.backend,
                              log_level=args.log_level, tier=args.tier)


def main(argv: list[str] | None = None) -> int:
    # NOTE: imported here, not at the top: a missing package is then refused in one sentence (refusing).
    from actors.runtime.serving import install_signal_handlers, run_node, setup_logging

    install_signal_handlers()
    args = options().parse_args(argv)
    setup_logging()

    from actors.node.job_cgroups import JobCgroups
    from actors.messages import ConfigureExecutor
    from actors.node.reporter import REFUSED_FILE
    from conf import metrics
    from actors.node.sandbox import SandboxUnavailable, Wrapping
    from conf import logs
    from conf.settings import ConfigError
    from storage import database
    from storage.node import tasks
    from storage.node.models import db
    from web.executor_app import create_app

    try:
        config = load_config(args, os.environ)
        start_checks(config)
        os.makedirs(config.tasks_path, exist_ok=True)  # NOTE: before the probe, which notes which folders exist
        wrapping = Wrapping.probe(config)
    except (ConfigError, SandboxUnavailable) as exc:
        print(f"run_client.py: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format)
    # NOTE: before the actor system starts, so that (on a delegated cgroup v2) its processes start
    # in the node's own leaf cgroup.
    cgroups = JobCgroups.detect(f"{config.service}-{config.port}") if config.backend == "local" else None
    log_start(config, wrapping, cgroups)
    shutil.rmtree(config.incoming_path, ignore_errors=True)
    refused = os.path.join(config.data_path, REFUSED_FILE)
    if os.path.exists(refused):
        os.remove(refused)  # a previous run's: this one asks the server again
    tasks.remove_partial_zips(config.zips_path)
    database_opened(lambda: database.bind(db, config.database_url, create_tables=True), config.database_url)
    # NOTE: before the actor system forks its processes, so that they count into the same folder.
    metrics.prepare(config.data_path, [config.service], "executor")
    code = run_node(
        state_dir=config.data_path, admin_port=config.actor_admin_port,
        actor_class="actors.node.executor.ExecutorActor",
        configure_message=ConfigureExecutor(config, wrapping, cgroups, os.getpid()),
        make_app=lambda gateway, stopping: create_app(config, gateway, stopping, backend_problem(config)),
        host=config.host, port=config.port, threads=config.threads,
        max_body=config.max_upload_mb * 1024 * 1024, name=f"orchestrator-executor[{config.service}]",
        connections=config.connections, reserved_for=server_address(config),
        # SIGTERM drains: no new jobs, running ones finish and are reported, then the node exits.
        # Ctrl-C (SIGINT) stops at once: running scripts are stopped and reported lost.
        settled=drained, settle_seconds=None, immediate=(signal.SIGINT,), section="[client]",
    )
    # NOTE: the server does not know this node's service: the reporter said how to add it, and
    # stopped the node (actors/node/reporter.py).
    return 2 if os.path.exists(refused) else code


def start_checks(config) -> None:
    """Refuse to start (preflight.Refused) unless the port is free, and the data folder
    and the job folders' can be written."""
    free_to_listen(config.host, config.port, "[client]")
    writable_folder("[client] data_dir", config.data_path)
    if config.backend == "slurm" and config.slurm_workdir:
        writable_folder("[client] slurm_workdir", config.tasks_path)


def log_start(config, wrapping, cgroups) -> None:
    from conf.summary import describe_executor
    from conf.version import VERSION

    limits_by = cgroups.describe() if cgroups else "rlimits" if config.backend == "local" else "rlimits and Slurm's own"
    logging.getLogger("orchestrator").info("%s", describe_executor(config, VERSION, wrapping.describe(config),
                                                                   limits_by))


def backend_problem(config):
    """Why the backend cannot take work now (None: it can): a Slurm node asks its controller."""
    if config.backend != "slurm":
        return lambda: None
    from actors.node.backends.slurm_health import SlurmHealth

    return SlurmHealth()


def server_address(config):
    """The server's addresses: the share of connections kept for the cluster is kept for them."""
    from web.connections import CachedAddresses

    return CachedAddresses(lambda: [config.server_url] if config.server_url else [], seconds=300)


def drained(gateway, requests) -> bool:
    from actors.messages import Drain, Drained

    reply = gateway.ask(Drain(), timeout=5.0)
    return isinstance(reply, Drained) and reply.remaining == 0 and requests.count == 0


if __name__ == "__main__":
    sys.exit(refusing("run_client.py", main))
