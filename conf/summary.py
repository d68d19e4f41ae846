"""What a node is, in the block of lines it logs once at start: pure functions of its configuration.

Run in each node's main process (run_server.py, run_client.py), before its actor system starts.
Nothing secret is shown: portal tokens by their names, the cluster secret as set or not, a database
URL without its password.
"""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from conf.settings import ClientConfig, ServerConfig, is_loopback


def without_password(url: str) -> str:
    """A database URL as it may be shown: `postgresql://user@host/name`; a SQLite path unchanged."""
    parts = urlsplit(url)
    if not parts.scheme or parts.password is None:
        return url
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _address(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _hours(value: float) -> str:
    return f"{value:g} h"


def _auth(config: ServerConfig) -> str:
    if config.tokens:
        return "portal tokens (" + ", ".join(name for name, _ in config.tokens) + ")"
    if is_loopback(config.host):
        return "anonymous, loopback callers only (no [tokens])"
    return f"anonymous on {config.host} (allow_anonymous = true)"


def describe_server(config: ServerConfig, version: str) -> str:
    lines = [
        f"orchestrator server {version}",
        f"  address: {_address(config.host, config.port)}" + (
            f" (executors report to {config.own_url})" if config.callback_url else ""),
        f"  database: {without_password(config.database_url)}",
        f"  data folder: {config.data_dir}",
    ]
    for service in config.services:
        retention = service.retention_hours if service.retention_hours is not None else config.retention_hours
        lines.append(
            f"  service {service.name}: runs_per_user {service.runs_per_user}, "
            f"max_runs {service.max_runs if service.max_runs is not None else 'the slots of its executors'}, "
            f"max_queued_per_user {service.max_queued_per_user or 'unlimited'}, retention {_hours(retention)}, "
            f"{_policy(service)}; executors: {', '.join(service.clients) or 'none configured'} (and those that register)")
    lines += [
        f"  TES: {_tes(config)}",
        f"  auth: {_auth(config)}",
        f"  cluster secret: {'set' if config.cluster_secret else 'not set'}",
        "  webhooks: " + (f"to {', '.join(config.webhook_hosts)}, signed for "
                          f"{', '.join(name for name, _ in config.webhook_secrets)}, retried for "
                          f"{_hours(config.webhook_retry_hours)}" if config.webhooks_on else "off (no webhook_hosts)"),
    ]
    return "\n".join(lines)


def describe_executor(config: ClientConfig, version: str, jobs_run: str, limits_by: str) -> str:
    """`jobs_run` and `limits_by`: how this host runs jobs (the sandbox found, what enforces the
    limits), which the node probes at start."""
    memory = f"{config.max_memory_mb} MB" if config.max_memory_mb else "unlimited"
    backend = config.backend if config.backend == "local" else (
        f"slurm (partition {config.partition or 'default'}, workdir {config.tasks_path})")
    return "\n".join([
        f"orchestrator executor {version}",
        f"  service: {config.service}",
        f"  address: {_address(config.host, config.port)}" + (
            f" (the server reaches it at {config.own_url})" if config.advertise_url else ""),
        f"  database: {config.database_url}",
        f"  data folder: {config.data_path}",
        f"  backend: {backend}, {config.slots} slots, tier {config.tier}",
        f"  jobs run {jobs_run}",
        f"  limits per job ({limits_by}): memory {memory}, {config.max_processes} processes, "
        f"output {config.max_output_mb} MB, {config.max_open_files} open files",
        f"  server: {config.server_url or 'none (answers a server that lists it)'}",
        f"  cluster secret: {'set' if config.cluster_secret else 'not set'}",
    ])


def _policy(service) -> str:
    """How the service orders its users, and its group cap and time limit where set."""
    parts = [f"fair_share (half-life {_hours(service.fair_share_half_life_hours)})"
             if service.policy == "fair_share" else "round_robin"]
    if service.runs_per_group is not None:
        parts.append(f"runs_per_group {service.runs_per_group}")
    if service.max_runtime is not None:
        parts.append(f"max_runtime {service.max_runtime} s")
    if service.max_cores is not None:
        parts.append(f"max_cores {service.max_cores}")
    return ", ".join(parts)


def _tes(config: ServerConfig) -> str:
    """Which service a GA4GH TES task's image selects (web/tes/)."""
    tes = config.tes
    if not tes.images and not tes.default_service:
        return "off (no [tes] images or default_service: every task is refused)"
    pairs = [f"{image} → {service}" for image, service in tes.images]
    pairs.append(f"any other image → {tes.default_service}" if tes.default_service else "other images refused")
    hosts = f"; urls to {', '.join(tes.url_hosts)}" if tes.url_hosts else "; urls to global addresses"
    return ("/ga4gh/tes/v1, " + ", ".join(pairs) + hosts
            + (f"; links under {tes.public_url}" if tes.public_url else ""))
