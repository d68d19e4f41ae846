#!/usr/bin/env python3
"""Start an executor node: `python run_client.py --service NAME [--config conf/client.ini] [--port N]
[--backend local|slurm]`."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys

from actors.runtime.serving import install_signal_handlers, run_node, setup_logging
from conf.logs import LEVELS


def main(argv: list[str] | None = None) -> int:
    install_signal_handlers()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--service", help="the service this node runs jobs for, overriding [client] service")
    parser.add_argument("--config", default="conf/client.ini", help="INI file (default: conf/client.ini)")
    parser.add_argument("--port", type=int, help="HTTP port, overriding [client] port")
    parser.add_argument("--backend", help="where jobs run: local or slurm, overriding [client] backend")
    parser.add_argument("--log-level", choices=tuple(LEVELS),
                        help="least severe lines logged, overriding log_level of the file")
    args = parser.parse_args(argv)
    setup_logging()

    from actors.node.job_cgroups import JobCgroups
    from actors.messages import ConfigureExecutor
    from actors.node.sandbox import SandboxUnavailable, Wrapping
    from conf import logs
    from conf.settings import ConfigError, load_client_config
    from storage import database
    from storage.node import tasks
    from storage.node.models import db
    from web.executor_app import create_app

    try:
        config = load_client_config(args.config, os.environ, service=args.service, port=args.port,
                                    backend=args.backend, log_level=args.log_level)
        os.makedirs(config.tasks_path, exist_ok=True)  # NOTE: before the probe, which notes which folders exist
        wrapping = Wrapping.probe(config)
    except (ConfigError, SandboxUnavailable) as exc:
        print(f"run_client.py: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format)
    # NOTE: before the actor system starts, so that (on a delegated cgroup v2) its processes start
    # in the node's own leaf cgroup.
    cgroups = JobCgroups.detect(f"{config.service}-{config.port}") if config.backend == "local" else None
    logging.getLogger("orchestrator").info(
        "jobs run %s; their limits: %s", wrapping.describe(config),
        cgroups.describe() if cgroups else "rlimits" if config.backend == "local" else "rlimits (and Slurm's own)")
    shutil.rmtree(config.incoming_path, ignore_errors=True)
    tasks.remove_partial_zips(config.zips_path)
    database.bind(db, config.database_url, create_tables=True)
    return run_node(
        state_dir=config.data_path, admin_port=config.actor_admin_port,
        actor_class="actors.node.executor.ExecutorActor",
        configure_message=ConfigureExecutor(config, wrapping, cgroups),
        make_app=lambda gateway, stopping: create_app(config, gateway, stopping, backend_problem(config)),
        host=config.host, port=config.port, threads=config.threads,
        max_body=config.max_upload_mb * 1024 * 1024, name=f"orchestrator-executor[{config.service}]",
        connections=config.connections, reserved_for=server_address(config),
        # SIGTERM drains: no new jobs, running ones finish and are reported, then the node exits.
        # Ctrl-C (SIGINT) stops at once: running scripts are stopped and reported lost.
        settled=drained, settle_seconds=None, immediate=(signal.SIGINT,),
    )


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
    sys.exit(main())
