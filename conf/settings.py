"""Configuration: the defaults, the INI loader, the original's environment overrides, validation.

Owns `ServerConfig`, `ServiceConfig` and `ClientConfig` (frozen dataclasses of plain data, so they
can travel inside actor messages) and the two loaders `load_server_config` and `load_client_config`.
Every problem is reported as one `ConfigError` sentence that names the offending key.

Relative paths in the files are taken from the directory the process is started in.
"""
from __future__ import annotations

import base64
import configparser
import ipaddress
import math
import os
import re
import shlex
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping
from urllib.parse import urlsplit

from conf import logs, webhook_hosts

SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
DEFAULT_RUNS_PER_USER = 5
DEFAULT_RETENTION_HOURS = 48.0
DEFAULT_MAX_UPLOAD_MB = 400
DEFAULT_MAX_FILES = 100
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 4096
DEFAULT_MAX_PROCESSES = 4096
DEFAULT_MAX_OUTPUT_MB = 10240
DEFAULT_MAX_OPEN_FILES = 4096
DEFAULT_WEBHOOK_RETRY_HOURS = 24.0
DEFAULT_WEBHOOK_BACKOFF_SECONDS = 10.0
DEFAULT_WEBHOOK_TIMEOUT = 5.0
#: The [webhooks] name of the secret used where a portal has none of its own (and without tokens).
DEFAULT_WEBHOOK_SECRET = "default"


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the key."""


def _reachable_url(configured: str, host: str, port: int) -> str:
    """The URL others reach a node at: the configured one, else its host and port (a wildcard
    host means loopback)."""
    if configured:
        return configured.rstrip("/")
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


@dataclass(frozen=True)
class ServiceConfig:
    """One `[service.NAME]` section."""

    name: str
    clients: tuple[str, ...] = ()
    runs_per_user: int = DEFAULT_RUNS_PER_USER
    #: None means "the total slots of the service's reachable executors".
    max_runs: int | None = None
    #: None means "use [server] retention_hours".
    retention_hours: float | None = None
    #: Most jobs one user may have queued (not yet started) in this service; None: no limit.
    max_queued_per_user: int | None = None
    #: The order users are served in: round_robin, or fair_share (by decayed usage per share).
    policy: str = "round_robin"
    #: fair_share: a user's usage halves every this many hours.
    fair_share_half_life_hours: float = 24.0
    #: Most jobs one group (a portal's `group` label) may have active at once; None: no cap.
    runs_per_group: int | None = None
    #: Seconds a job of this service may run before it is stopped (an upload may ask for less); None: no limit.
    max_runtime: int | None = None
    #: Most CPU cores a GA4GH TES task may ask for (resources.cpu_cores; more: 400); None: not checked.
    max_cores: int | None = None

    @property
    def half_life_seconds(self) -> float:
        return self.fair_share_half_life_hours * 3600.0


def sweep_interval(retention_seconds: Iterable[float]) -> float:
    """How often a node looks for expired data: a tenth of the shortest retention, between 1 s and
    60 s (the server's janitor, an executor's ExecutorActor)."""
    shortest = min(retention_seconds, default=3600.0)
    return max(1.0, min(60.0, shortest / 10.0))


@dataclass(frozen=True)
class TesConfig:
    """`[tes]`: the GA4GH TES API's choice of service by a task's executor image, its public URL, and
    the hosts a task's http(s) urls may name."""

    #: (image, service) pairs; an image name may hold `:` (python:3.11), never `=`.
    images: tuple[tuple[str, str], ...] = ()
    #: The service of every image not listed; None: an unlisted image is refused (400).
    default_service: str | None = None
    #: The server's address as TES clients reach it (behind a proxy), for the download URLs of a
    #: task's outputs; None: the address each request came to.
    public_url: str | None = None
    #: Host patterns (conf/webhook_hosts.py) a task's http(s) input and output URLs may name; empty:
    #: any host whose addresses are all global. Non-global addresses only for a host listed exactly.
    url_hosts: tuple[str, ...] = ()

    def service_of(self, image: str) -> str | None:
        return dict(self.images).get(image, self.default_service)


@dataclass(frozen=True)
class Connections:
    """How many HTTP connections a node holds, and for how long (web/connections.py); the same keys
    in [server] and [client]."""

    #: Open connections at most; the last tenth is kept for the cluster's own calls.
    connection_limit: int = 1000
    #: Seconds a client may take to send a request's headers, and may stay silent on a connection.
    client_timeout: int = 30
    #: Connections one client address may hold at once; 0: no cap (behind a reverse proxy).
    max_connections_per_client: int = 100


CONNECTION_KEYS = {"connection_limit", "client_timeout", "max_connections_per_client"}


LOG_KEYS = {"log_level", "log_format"}


#: The environment variables the loaders read, besides SERVICE_<NAME>_RUNS_PER_USER, _MAX_RUNS,
#: _UPLOAD_URL and _DOWNLOAD_URL (tests keep them out of their nodes' environment).
ENVIRONMENT = ("CLUSTER_SECRET", "CLUSTER_SECRET_FILE", "SERVER_URL", "ADVERTISE_URL", "LOG_LEVEL", "LOG_FORMAT",
               "DATA_PATH", "DB_PATH", "MAX_AGE")


def _overridden(section: Mapping[str, str], name: str, key: str, environ: Mapping[str, str],
                default: str = "") -> tuple[str, str]:
    """`[name] key` of the file, unless the environment variable KEY (upper case) is set: a container's
    usual way. The value, and what an error about it names (the variable, or the file's key)."""
    if environ.get(key.upper()):
        return environ[key.upper()], key.upper()
    return section.get(key, default), f"[{name}] {key}"


def _logging(section: Mapping[str, str], name: str, level: str | None, environ: Mapping[str, str]) -> dict:
    """log_level and log_format of `[name]`, or of LOG_LEVEL and LOG_FORMAT; `level` (--log-level)
    overrides both."""
    chosen = {}
    for key, default, allowed in (("log_level", "info", tuple(logs.LEVELS)), ("log_format", "text", logs.FORMATS)):
        value, where = (level, "--log-level") if key == "log_level" and level else _overridden(
            section, name, key, environ, default)
        chosen[key] = value.strip().lower()
        if chosen[key] not in allowed:
            raise ConfigError(f"{where} must be one of {', '.join(allowed)}, got {chosen[key]!r}.")
    return chosen


def _cluster_secret(section: Mapping[str, str], name: str, environ: Mapping[str, str]) -> str:
    """`[name] cluster_secret`, or CLUSTER_SECRET, or the content of the file CLUSTER_SECRET_FILE names
    (a Docker or podman secret, a systemd credential): a secret is better kept out of the INI file."""
    if environ.get("CLUSTER_SECRET") and environ.get("CLUSTER_SECRET_FILE"):
        raise ConfigError("CLUSTER_SECRET and CLUSTER_SECRET_FILE are both set; set one.")
    path = environ.get("CLUSTER_SECRET_FILE", "")
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                raw = file.read(MAX_SECRET_LENGTH + 1)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"CLUSTER_SECRET_FILE {path} cannot be read as text: "
                              f"{getattr(exc, 'strerror', None) or exc}.") from None
        if not raw.strip() or len(raw.strip()) > MAX_SECRET_LENGTH:
            raise ConfigError(f"CLUSTER_SECRET_FILE {path} must hold the secret: {MIN_SECRET_LENGTH} to "
                              f"{MAX_SECRET_LENGTH} printable characters (it is {'empty' if not raw.strip() else 'longer'}).")
        return _secret(f"the secret in CLUSTER_SECRET_FILE {path}", raw)
    value, where = _overridden(section, name, "cluster_secret", environ)
    return _secret(where, value)


def _connections(section: Mapping[str, str], name: str) -> Connections:
    defaults = Connections()
    limit = _int(f"[{name}] connection_limit", section.get("connection_limit", str(defaults.connection_limit)),
                 20, 50_000)
    return Connections(
        connection_limit=limit,
        client_timeout=_int(f"[{name}] client_timeout", section.get("client_timeout", str(defaults.client_timeout)),
                            1, 3600),
        max_connections_per_client=_int(
            f"[{name}] max_connections_per_client",
            section.get("max_connections_per_client", str(defaults.max_connections_per_client)), 0, limit),
    )


@dataclass(frozen=True)
class ServerConfig:
    """The whole server configuration: `[server]` plus every `[service.NAME]`."""

    host: str = "127.0.0.1"
    port: int = 5000
    data_dir: str = "var/server"
    database: str = ""  # "" means data_dir/orchestrator.sqlite
    retention_hours: float = DEFAULT_RETENTION_HOURS
    #: 0 means: pick a free port at start and remember it in data_dir.
    actor_admin_port: int = 0
    #: Base URL executors use to report back; "" derives it from host and port.
    callback_url: str = ""
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB
    threads: int = 8
    connections: Connections = field(default_factory=Connections)
    #: Seconds without a heartbeat (or answer) after which an executor is declared lost.
    executor_timeout: float = 30.0
    #: How many times a job is sent to an executor before a loss fails it.
    max_attempts: int = 3
    #: Failed fetches of a finished job's results (the executor answered, but not with them) after
    #: which the job fails.
    max_fetch_failures: int = 5
    #: Seconds before the results of a job are fetched again after a fetch that did not get them.
    fetch_retry_seconds: float = 5.0
    #: Most files in one upload.
    max_files: int = DEFAULT_MAX_FILES
    #: Serve without portal tokens on a non-loopback address (a warning is logged).
    allow_anonymous: bool = False
    #: The least severe lines logged (conf/logs.py LEVELS), and how: text or json (one object a line).
    log_level: str = "info"
    log_format: str = "text"
    #: Shared secret between this server and its executors; "" means none (loopback only).
    cluster_secret: str = ""
    #: (portal name, bearer token) pairs from [tokens]; empty means anonymous access.
    tokens: tuple[tuple[str, str], ...] = ()
    #: (operator name, bearer token) pairs from [operators]: they see every job and the operator views.
    operators: tuple[tuple[str, str], ...] = ()
    #: GET /metrics answers without a token (for a Prometheus that holds none).
    metrics_public: bool = False
    #: Seconds /metrics may answer with a previous count of the ended jobs and of the disk used.
    metrics_cache_seconds: float = 30.0
    #: Host patterns a job's callback_url may name (conf/webhook_hosts.py); empty: webhooks are off.
    webhook_hosts: tuple[str, ...] = ()
    #: Hours a webhook is retried (exponential backoff) before it is given up.
    webhook_retry_hours: float = DEFAULT_WEBHOOK_RETRY_HOURS
    #: Seconds before the first retry of a webhook; each further retry waits twice as long.
    webhook_backoff_seconds: float = DEFAULT_WEBHOOK_BACKOFF_SECONDS
    #: Seconds a receiver has to answer one webhook (connect and read, each).
    webhook_timeout: float = DEFAULT_WEBHOOK_TIMEOUT
    #: (portal name, Standard Webhooks secret) pairs from [webhooks]; `default` signs for the portals
    #: without a secret of their own, and for every job of a server without tokens.
    webhook_secrets: tuple[tuple[str, str], ...] = ()
    #: (portal name, share) pairs from [shares]: fair_share divides a portal's users' usage by it.
    shares: tuple[tuple[str, int], ...] = ()
    services: tuple[ServiceConfig, ...] = field(default_factory=tuple)
    #: [tes]: which service runs a GA4GH TES task's image (web/tes/).
    tes: TesConfig = field(default_factory=lambda: TesConfig())

    # --- the data folder's layout: this class is its one owner --------------------------------

    @property
    def jobs_path(self) -> str:
        """Uploaded jobs, a folder each (named in the job's row)."""
        return os.path.join(self.data_dir, "jobs")

    @property
    def results_path(self) -> str:
        """Fetched result zips, `<job id>.zip`."""
        return os.path.join(self.data_dir, "results")

    @property
    def incoming_path(self) -> str:
        """Uploads being received; moved into jobs_path with their row."""
        return os.path.join(self.data_dir, "incoming")

    def result_file(self, job_id: int) -> str:
        """Where a completed job's result zip is kept."""
        return os.path.join(self.results_path, f"{job_id}.zip")

    @property
    def database_url(self) -> str:
        return self.database or os.path.join(self.data_dir, "orchestrator.sqlite")

    @property
    def own_url(self) -> str:
        return _reachable_url(self.callback_url, self.host, self.port)

    def service(self, name: str) -> ServiceConfig | None:
        for svc in self.services:
            if svc.name == name:
                return svc
        return None

    def retention_seconds(self, service: str) -> float:
        svc = self.service(service)
        hours = svc.retention_hours if svc and svc.retention_hours is not None else self.retention_hours
        return hours * 3600.0

    def share(self, portal: str | None) -> int:
        """The fair-share weight of `portal`'s users ([shares]; 1 when not listed, and without tokens)."""
        return dict(self.shares).get(portal, 1) if portal else 1

    @property
    def webhooks_on(self) -> bool:
        return bool(self.webhook_hosts)

    def webhook_secret(self, portal: str | None) -> str | None:
        """The secret that signs the webhooks of `portal`'s jobs (None without tokens): its own, else
        the `default` one."""
        secrets = dict(self.webhook_secrets)
        return secrets.get(portal or DEFAULT_WEBHOOK_SECRET, secrets.get(DEFAULT_WEBHOOK_SECRET))

    @property
    def change_log_seconds(self) -> float:
        """How long a job's state changes (the change feed) and webhook deliveries are kept: the
        longest retention of any service, or the webhooks' retry period if that is longer."""
        retentions = [self.retention_seconds(s.name) for s in self.services]
        return max([self.retention_hours * 3600.0, *retentions, self.webhook_retry_hours * 3600.0])


@dataclass(frozen=True)
class ClientConfig:
    """The `[client]` section of an executor node."""

    service: str = "example"
    host: str = "127.0.0.1"
    port: int = 9000
    #: May hold {service} and {port}, so several executors can share one file.
    data_dir: str = "var/executor-{service}-{port}"
    slots: int = 4
    server_url: str = ""
    actor_admin_port: int = 0
    retention_hours: float = DEFAULT_RETENTION_HOURS
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB
    threads: int = 8
    connections: Connections = field(default_factory=Connections)
    #: Base URL the server reaches this node at; "" derives it from host and port.
    advertise_url: str = ""
    #: The least severe lines logged (conf/logs.py LEVELS), and how: text or json (one object a line).
    log_level: str = "info"
    log_format: str = "text"
    #: Shared secret with the server; "" means none (allowed on loopback only).
    cluster_secret: str = ""
    #: Where tasks run: "local" (`bash run.sh` on this host) or "slurm" (sbatch on a cluster).
    backend: str = "local"
    #: backend = slurm: the folder for job folders, shared with the cluster's nodes; "" means
    #: data_dir/tasks. May hold {service} and {port}.
    slurm_workdir: str = ""
    #: backend = slurm: the partition to submit to; "" means the cluster's default.
    partition: str = ""
    #: backend = slurm: extra sbatch arguments (e.g. --time=60 --mem=2G), already split.
    sbatch_args: tuple[str, ...] = ()
    #: backend = slurm: the slots the node advertises (jobs handed to Slurm at once).
    max_jobs: int = 64
    #: backend = slurm: seconds between two squeue calls while jobs are in Slurm.
    poll_interval: float = 2.0
    #: backend = slurm: Slurm's jobcomp/filetxt log, read for jobs squeue and scontrol forgot.
    jobcomp_log: str = "/var/log/slurm/jobcomp.log"
    #: GET /metrics answers without the cluster secret (for a Prometheus that holds none).
    metrics_public: bool = False
    #: Overflow tier: the server fills its service's tier-1 executors first, and sends work to a
    #: higher tier only while every lower one is full (e.g. a local pool at 1, a Slurm node at 2).
    tier: int = 1
    # --- how each job runs (may be set per service in a [service.NAME] section of the file) ---
    #: "bwrap" (each job in a bubblewrap sandbox), "none", or "" for bwrap when it is installed.
    sandbox: str = ""
    #: The job may use the network (otherwise it has only a loopback of its own).
    network: bool = False
    #: Absolute folders (or files) the job may read, besides the system's own directories.
    read_only_paths: tuple[str, ...] = ()
    #: Names of this node's environment variables the job gets too.
    pass_env: tuple[str, ...] = ()
    #: Memory of all the job's processes together, in MB; None: no limit of its own.
    max_memory_mb: int | None = None
    #: Processes (and threads) the job may have at once.
    max_processes: int = DEFAULT_MAX_PROCESSES
    #: Size of the job's folder (its result), in MB.
    max_output_mb: int = DEFAULT_MAX_OUTPUT_MB
    #: Files each of the job's processes may have open at once.
    max_open_files: int = DEFAULT_MAX_OPEN_FILES

    @property
    def own_url(self) -> str:
        return _reachable_url(self.advertise_url, self.host, self.port)

    @property
    def data_path(self) -> str:
        return self.data_dir.format(service=self.service, port=self.port)

    @property
    def incoming_path(self) -> str:
        """Submitted bundles being received; moved into tasks_path with their row."""
        return os.path.join(self.data_path, "incoming")

    @property
    def tasks_path(self) -> str:
        """The folder job folders are stored and run in."""
        if self.backend == "slurm" and self.slurm_workdir:
            return self.slurm_workdir.format(service=self.service, port=self.port)
        return os.path.join(self.data_path, "tasks")

    @property
    def zips_path(self) -> str:
        """The zips of finished tasks' folders, made once and served to the server."""
        return os.path.join(self.data_path, "zips")

    def zip_file(self, task_id: int) -> str:
        """Where the node keeps the zip of an ended task's folder."""
        return os.path.join(self.zips_path, f"{task_id}.zip")

    @property
    def database_url(self) -> str:
        return os.path.join(self.data_path, "executor.sqlite")


# --- value parsers: each names the key in its error ------------------------------------------

def _int(key: str, raw: str, minimum: int, maximum: int = 2**31) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{key} must be a whole number, got {raw!r}.") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{key} must be between {minimum} and {maximum}, got {value}.")
    return value


#: The longest period any hours or seconds setting may name: ten years. Longer ones are typos, and
#: would overflow the datetime arithmetic that uses them (now + timedelta) at the first use.
MAX_PERIOD_SECONDS = 10 * 365 * 24 * 3600.0


def _positive(key: str, raw: str, unit: str, per_unit: float) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{key} must be a number of {unit}, got {raw!r}.") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key} must be a positive number of {unit}, got {raw!r}.")
    if value * per_unit > MAX_PERIOD_SECONDS:
        raise ConfigError(f"{key} must be at most {MAX_PERIOD_SECONDS / per_unit:g} {unit} (ten years), got {raw!r}.")
    return value


def _hours(key: str, raw: str) -> float:
    return _positive(key, raw, "hours", 3600.0)


def _seconds(key: str, raw: str) -> float:
    return _positive(key, raw, "seconds", 1.0)


def _bool(key: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{key} must be true or false, got {raw!r}.")


def _secret(key: str, raw: str) -> str:
    value = raw.strip()
    if value and (not MIN_SECRET_LENGTH <= len(value) <= MAX_SECRET_LENGTH or any(c.isspace() for c in value)
                  or not value.isprintable()):
        raise ConfigError(f"{key} must be at least {MIN_SECRET_LENGTH} characters (at most {MAX_SECRET_LENGTH}), "
                          f"printable, without spaces (e.g. from `python -c 'import secrets; "
                          f"print(secrets.token_urlsafe(32))'`).")
    return value


def _tokens(parser: configparser.ConfigParser, section: str = "tokens",
            who: str = "portal") -> tuple[tuple[str, str], ...]:
    """The (name, secret) pairs of `[tokens]` (portals) or `[operators]`."""
    if not parser.has_section(section):
        return ()
    found = []
    for name, secret in parser[section].items():
        if not re.match(r"^[a-z0-9][a-z0-9_.-]{0,63}$", name):
            raise ConfigError(f"[{section}] {who} name {name!r} is invalid; use lowercase letters, digits, '.', '-', '_'.")
        found.append((name, _secret(f"[{section}] {name}", secret)))
        if not found[-1][1]:
            raise ConfigError(f"[{section}] {name} has no secret.")
    secrets_seen = [secret for _, secret in found]
    if len(set(secrets_seen)) != len(secrets_seen):
        raise ConfigError(f"[{section}] two {who}s share one secret; give each {who} its own.")
    return tuple(found)


def _tes(parser: configparser.ConfigParser, services: Mapping[str, ServiceConfig]) -> TesConfig:
    """`[tes]`: `images = alpine=example, python:3.11=prodigy` (split at each pair's last `=`) and
    `default_service`; every service named must be configured; `public_url`; `url_hosts`."""
    if not parser.has_section("tes"):
        return TesConfig()
    section = dict(parser["tes"])
    _unknown_keys("tes", section, {"images", "default_service", "public_url", "url_hosts"})
    pairs = []
    for item in filter(None, (part.strip() for part in section.get("images", "").split(","))):
        image, _, service = item.rpartition("=")
        if not image.strip() or service.strip() not in services:
            raise ConfigError(f"[tes] images: {item!r} is not image=service with a configured service "
                              f"({', '.join(sorted(services))}).")
        pairs.append((image.strip(), service.strip()))
    default = section.get("default_service", "").strip() or None
    if default is not None and default not in services:
        raise ConfigError(f"[tes] default_service {default!r} is not a configured service "
                          f"({', '.join(sorted(services))}).")
    public_url = section.get("public_url", "").strip()
    return TesConfig(tuple(pairs), default, _url("[tes] public_url", public_url) if public_url else None,
                     _host_patterns(section.get("url_hosts", ""), "[tes] url_hosts"))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(key: str, raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key} must be an http(s)://host:port URL, got {raw!r}.")
    try:
        parts.port
    except ValueError:
        raise ConfigError(f"{key} has an invalid port in {raw!r}.") from None
    return raw.strip().rstrip("/")


def _base_url(key: str, raw: str) -> str:
    """The original's SERVICE_X_UPLOAD_URL names an executor by its scheme://host:port only."""
    _url(key, raw)
    parts = urlsplit(raw.strip())
    return f"{parts.scheme}://{parts.netloc}"


def _read(path: str | None) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    if path:
        if not os.path.isfile(path):
            raise ConfigError(f"configuration file {path} does not exist.")
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as exc:
            raise ConfigError(f"configuration file {path} cannot be parsed: {exc}.") from None
    return parser


def _unknown_keys(section: str, present: Mapping[str, str], known: set[str]) -> None:
    extra = sorted(set(present) - known)
    if extra:
        raise ConfigError(
            f"[{section}] has unknown key {extra[0]!r}; accepted keys are {', '.join(sorted(known))}."
        )


# --- server ------------------------------------------------------------------------------------

_SERVER_KEYS = {"host", "port", "data_dir", "database", "retention_hours", "actor_admin_port",
                "callback_url", "max_upload_mb", "threads", "executor_timeout", "max_attempts", "max_files",
                "allow_anonymous", "cluster_secret", "max_fetch_failures", "fetch_retry_seconds", "metrics_public",
                "metrics_cache_seconds", "webhook_hosts", "webhook_retry_hours", "webhook_backoff_seconds",
                "webhook_timeout", *CONNECTION_KEYS, *LOG_KEYS}
_SERVICE_KEYS = {"clients", "runs_per_user", "max_runs", "retention_hours", "max_queued_per_user", "policy",
                 "fair_share_half_life_hours", "runs_per_group", "max_runtime", "max_cores"}
#: The orders a service may serve its users in (ServiceConfig.policy).
POLICIES = ("round_robin", "fair_share")
_ENV_SERVICE = re.compile(r"^SERVICE_(.+)_(RUNS_PER_USER|MAX_RUNS|UPLOAD_URL|DOWNLOAD_URL)$")


def _service_from(name: str, section: Mapping[str, str]) -> ServiceConfig:
    where = f"[service.{name}]"
    _unknown_keys(f"service.{name}", section, _SERVICE_KEYS)
    clients = tuple(
        _url(f"{where} clients", item) for item in section.get("clients", "").split(",") if item.strip()
    )
    max_runs = section.get("max_runs", "").strip()
    retention = section.get("retention_hours", "").strip()
    max_queued = section.get("max_queued_per_user", "").strip()
    runs_per_group = section.get("runs_per_group", "").strip()
    policy = section.get("policy", "round_robin").strip().lower()
    if policy not in POLICIES:
        raise ConfigError(f"{where} policy must be one of {', '.join(POLICIES)}, got {policy!r}.")
    max_runtime = section.get("max_runtime", "").strip()
    max_cores = section.get("max_cores", "").strip()
    return ServiceConfig(
        name=name,
        clients=clients,
        runs_per_user=_int(f"{where} runs_per_user", section.get("runs_per_user", str(DEFAULT_RUNS_PER_USER)), 1),
        max_runs=_int(f"{where} max_runs", max_runs, 1) if max_runs else None,
        retention_hours=_hours(f"{where} retention_hours", retention) if retention else None,
        max_queued_per_user=_int(f"{where} max_queued_per_user", max_queued, 1, 2**31) if max_queued else None,
        policy=policy,
        fair_share_half_life_hours=_hours(f"{where} fair_share_half_life_hours",
                                          section.get("fair_share_half_life_hours", "24")),
        runs_per_group=_int(f"{where} runs_per_group", runs_per_group, 1) if runs_per_group else None,
        max_runtime=_int(f"{where} max_runtime", max_runtime, 1, int(MAX_PERIOD_SECONDS)) if max_runtime else None,
        max_cores=_int(f"{where} max_cores", max_cores, 1, 100_000) if max_cores else None,
    )


def _apply_service_env(services: dict[str, ServiceConfig], environ: Mapping[str, str]) -> None:
    for key in sorted(environ):
        match = _ENV_SERVICE.match(key)
        if not match:
            continue
        name, setting = match.group(1).lower(), match.group(2)
        if not SERVICE_NAME.match(name):
            raise ConfigError(f"{key} names service {name!r}, which is not a valid service name.")
        svc = services.get(name, ServiceConfig(name=name))
        raw = environ[key]
        if setting == "RUNS_PER_USER":
            svc = replace(svc, runs_per_user=_int(key, raw, 1))
        elif setting == "MAX_RUNS":
            svc = replace(svc, max_runs=_int(key, raw, 1))
        elif setting == "UPLOAD_URL":
            url = _base_url(key, raw)
            if url not in svc.clients:
                svc = replace(svc, clients=svc.clients + (url,))
        # DOWNLOAD_URL names the same executor as UPLOAD_URL; accepted and not needed.
        services[name] = svc


def load_server_config(path: str | None, environ: Mapping[str, str] = os.environ,
                       port: int | None = None, log_level: str | None = None) -> ServerConfig:
    """Read `path` (INI), apply the original's environment overrides, then validate.

    Raises:
        ConfigError: one sentence naming the key that is wrong.
    """
    parser = _read(path)
    section = dict(parser["server"]) if parser.has_section("server") else {}
    _unknown_keys("server", section, _SERVER_KEYS)
    defaults = ServerConfig()
    services: dict[str, ServiceConfig] = {}
    for name in parser.sections():
        if name in ("server", "tokens", "operators", "webhooks", "shares", "tes"):
            continue
        if not name.startswith("service."):
            raise ConfigError(f"section [{name}] is not known; use [server], [tokens], [operators], [webhooks], [shares], [tes] or "
                              f"[service.NAME].")
        svc_name = name[len("service."):]
        if not SERVICE_NAME.match(svc_name):
            raise ConfigError(
                f"section [{name}] has an invalid service name; use lowercase letters, digits, '-' and '_'."
            )
        services[svc_name] = _service_from(svc_name, parser[name])
    _apply_service_env(services, environ)

    retention = section.get("retention_hours", str(defaults.retention_hours))
    if environ.get("MAX_AGE"):
        seconds = _int("MAX_AGE", environ["MAX_AGE"], 1, 2**40)
        retention = str(seconds / 3600.0)
    config = ServerConfig(
        host=section.get("host", defaults.host).strip(),
        port=_int("[server] port", section.get("port", str(defaults.port)), 1, 65535),
        data_dir=environ.get("DATA_PATH") or section.get("data_dir", defaults.data_dir).strip(),
        database=environ.get("DB_PATH") or section.get("database", "").strip(),
        retention_hours=_hours("[server] retention_hours" if not environ.get("MAX_AGE") else "MAX_AGE", retention),
        actor_admin_port=_int("[server] actor_admin_port", section.get("actor_admin_port", "0"), 0, 65535),
        callback_url=_url("[server] callback_url", section["callback_url"]) if section.get("callback_url", "").strip() else "",
        max_upload_mb=_int("[server] max_upload_mb", section.get("max_upload_mb", str(defaults.max_upload_mb)), 1, 1 << 20),
        threads=_int("[server] threads", section.get("threads", str(defaults.threads)), 1, 256),
        connections=_connections(section, "server"),
        **_logging(section, "server", log_level, environ),
        executor_timeout=_seconds("[server] executor_timeout",
                                  section.get("executor_timeout", str(defaults.executor_timeout))),
        max_attempts=_int("[server] max_attempts", section.get("max_attempts", str(defaults.max_attempts)), 1, 100),
        max_fetch_failures=_int("[server] max_fetch_failures",
                                section.get("max_fetch_failures", str(defaults.max_fetch_failures)), 1, 1000),
        fetch_retry_seconds=_seconds("[server] fetch_retry_seconds",
                                     section.get("fetch_retry_seconds", str(defaults.fetch_retry_seconds))),
        max_files=_int("[server] max_files", section.get("max_files", str(defaults.max_files)), 1, 10_000),
        allow_anonymous=_bool("[server] allow_anonymous", section.get("allow_anonymous", "false")),
        cluster_secret=_cluster_secret(section, "server", environ),
        tokens=_tokens(parser),
        operators=_tokens(parser, "operators", "operator"),
        metrics_public=_bool("[server] metrics_public", section.get("metrics_public", "false")),
        metrics_cache_seconds=_seconds("[server] metrics_cache_seconds",
                                       section.get("metrics_cache_seconds", str(defaults.metrics_cache_seconds))),
        webhook_hosts=_host_patterns(section.get("webhook_hosts", ""), "[server] webhook_hosts"),
        webhook_retry_hours=_hours("[server] webhook_retry_hours",
                                   section.get("webhook_retry_hours", str(defaults.webhook_retry_hours))),
        webhook_backoff_seconds=_seconds("[server] webhook_backoff_seconds",
                                         section.get("webhook_backoff_seconds", str(defaults.webhook_backoff_seconds))),
        webhook_timeout=_seconds("[server] webhook_timeout", section.get("webhook_timeout", str(defaults.webhook_timeout))),
        webhook_secrets=_webhook_secrets(parser),
        shares=_shares(parser),
        services=tuple(services[name] for name in sorted(services)),
        tes=_tes(parser, services),
    )
    if port is not None:
        config = replace(config, port=_int("--port", str(port), 1, 65535))
    if not config.services:
        raise ConfigError("no service is configured; add a [service.NAME] section or SERVICE_<NAME>_UPLOAD_URL.")
    if config.actor_admin_port and config.actor_admin_port == config.port:
        raise ConfigError("[server] actor_admin_port must differ from [server] port.")
    if set(dict(config.tokens).values()) & set(dict(config.operators).values()):
        raise ConfigError("[operators] and [tokens] share a secret; give each operator and portal its own.")
    if not config.tokens and not config.allow_anonymous and not is_loopback(config.host):
        raise ConfigError(f"[server] host {config.host} is not a loopback address and [tokens] is empty; add a "
                          f"portal token, or set allow_anonymous = true to serve anyone who can connect.")
    if not config.cluster_secret and (config.tokens or not is_loopback(config.host)):
        # NOTE: without the secret anyone could register as an executor, receive portals' job files
        # and post forged results; only a loopback server with no portals has no one to keep out.
        why = "[tokens] has portals" if config.tokens else f"host {config.host} is not a loopback address"
        raise ConfigError(f"[server] cluster_secret is empty while {why}; set one (at least {MIN_SECRET_LENGTH} "
                          f"characters) here or in CLUSTER_SECRET, and the same in each executor's [client] cluster_secret.")
    _check_webhooks(config)
    unknown = sorted(set(dict(config.shares)) - set(dict(config.tokens)))
    if unknown:
        raise ConfigError(f"[shares] names {', '.join(unknown)}, not a portal of [tokens]; shares are per portal.")
    return config


def _host_patterns(raw: str, setting: str) -> tuple[str, ...]:
    try:
        return webhook_hosts.parse_patterns(raw)
    except ValueError as exc:
        raise ConfigError(f"{setting} has {exc.args[0]!r}, which is not a host pattern; use host, "
                          f"host:port or *.domain (e.g. *.wenmr.eu, portal.example.org:8443).") from None


def _shares(parser: configparser.ConfigParser) -> tuple[tuple[str, int], ...]:
    """[shares] portal = N: a whole number from 1 to 1000 per portal (checked against [tokens] later)."""
    if not parser.has_section("shares"):
        return ()
    return tuple((name, _int(f"[shares] {name}", raw, 1, 1000)) for name, raw in parser["shares"].items())


def _webhook_secrets(parser: configparser.ConfigParser) -> tuple[tuple[str, str], ...]:
    """[webhooks] portal = whsec_... (Standard Webhooks: whsec_ and 24 to 64 random bytes in base64)."""
    if not parser.has_section("webhooks"):
        return ()
    found = []
    for name, secret in parser["webhooks"].items():
        value = secret.strip()
        try:
            key = base64.b64decode(value[len("whsec_"):], validate=True)
        except ValueError:
            key = b""
        if not value.startswith("whsec_") or not 24 <= len(key) <= 64:
            raise ConfigError(f"[webhooks] {name} must be whsec_ followed by 24 to 64 random bytes in base64 (e.g. "
                              f"from `python -c 'import base64, secrets; print(\"whsec_\" + "
                              f"base64.b64encode(secrets.token_bytes(32)).decode())'`).")
        found.append((name, value))
    return tuple(found)


def _check_webhooks(config: ServerConfig) -> None:
    """Every name of [webhooks] is a portal (or `default`), and every portal that may ask for
    webhooks has a secret to sign them with."""
    portals = {name for name, _ in config.tokens}
    for name, _ in config.webhook_secrets:
        if name != DEFAULT_WEBHOOK_SECRET and name not in portals:
            raise ConfigError(f"[webhooks] {name} is not a portal of [tokens]; name a portal, or "
                              f"{DEFAULT_WEBHOOK_SECRET} for the portals without a secret of their own.")
    if not config.webhooks_on:
        return
    unsigned = sorted(name for name in portals or {None} if config.webhook_secret(name) is None)
    if unsigned:
        who = f"portal {unsigned[0]}" if unsigned[0] else "this server (it has no [tokens])"
        raise ConfigError(f"[server] webhook_hosts is set but {who} has no webhook secret; add "
                          f"[webhooks] {unsigned[0] or DEFAULT_WEBHOOK_SECRET} = whsec_... (or a "
                          f"{DEFAULT_WEBHOOK_SECRET} for every portal).")


# --- client ------------------------------------------------------------------------------------

#: How each job runs: keys of [client] that a [service.NAME] section of the same file may override.
_JOB_KEYS = {"sandbox", "network", "read_only_paths", "pass_env", "max_memory_mb", "max_processes", "max_output_mb",
             "max_open_files"}
_CLIENT_KEYS = {"service", "host", "port", "data_dir", "slots", "server_url", "actor_admin_port", "advertise_url",
                "cluster_secret", "retention_hours", "max_upload_mb", "threads", *CONNECTION_KEYS, *LOG_KEYS,
                "backend", "slurm_workdir", "partition", "sbatch_args", "max_jobs", "poll_interval", "jobcomp_log",
                "metrics_public", "tier",
                *_JOB_KEYS}
BACKENDS = ("local", "slurm")
#: The highest overflow tier ([client] tier).
MAX_TIER = 100
SANDBOXES = ("bwrap", "none")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: sbatch options the Slurm backend sets itself: a job's folder, name and logs are its own business.
_OWN_SBATCH_OPTIONS = {"--chdir", "--job-name", "--output", "--error", "--wrap", "--parsable", "--array"}
_OWN_SBATCH_SHORT = {"-D", "-J", "-o", "-e", "-a"}


def _sbatch_args(raw: str) -> tuple[str, ...]:
    key = "[client] sbatch_args"
    try:
        args = tuple(shlex.split(raw))
    except ValueError as exc:
        raise ConfigError(f"{key} cannot be split like a shell command line: {exc}.") from None
    for arg in args:
        option = arg.split("=", 1)[0]
        if option in _OWN_SBATCH_OPTIONS or (not arg.startswith("--") and arg[:2] in _OWN_SBATCH_SHORT):
            raise ConfigError(f"{key} must not contain {option}: the executor sets the job's folder, name, "
                              f"logs and command itself.")
    return args


def _job_settings(where: str, section: Mapping[str, str]) -> dict:
    """The job keys present in `section`, parsed (ClientConfig field name → value)."""
    found: dict = {}
    if "sandbox" in section:
        sandbox = section["sandbox"].strip().lower()
        if sandbox not in ("", *SANDBOXES):
            raise ConfigError(f"{where} sandbox must be bwrap, none, or empty (bwrap when installed), got {sandbox!r}.")
        found["sandbox"] = sandbox
    if "network" in section:
        found["network"] = _bool(f"{where} network", section["network"])
    if "read_only_paths" in section:
        paths = tuple(os.path.abspath(item.strip()) for item in section["read_only_paths"].split(",") if item.strip())
        for path in paths:
            if not os.path.exists(path):
                raise ConfigError(f"{where} read_only_paths names {path}, which does not exist.")
        found["read_only_paths"] = paths
    if "pass_env" in section:
        names = tuple(item.strip() for item in section["pass_env"].split(",") if item.strip())
        for name in names:
            if not _ENV_NAME.match(name):
                raise ConfigError(f"{where} pass_env must list environment variable names, got {name!r}.")
        found["pass_env"] = names
    if section.get("max_memory_mb", "").strip():
        found["max_memory_mb"] = _int(f"{where} max_memory_mb", section["max_memory_mb"], 16, 1 << 30)
    elif "max_memory_mb" in section:
        found["max_memory_mb"] = None
    for key, low in (("max_processes", 8), ("max_output_mb", 1), ("max_open_files", 16)):
        if section.get(key, "").strip():
            found[key] = _int(f"{where} {key}", section[key], low, 1 << 30)
    return found


def load_client_config(path: str | None, environ: Mapping[str, str] = os.environ, *,
                       service: str | None = None, port: int | None = None,
                       backend: str | None = None, log_level: str | None = None,
                       tier: int | None = None) -> ClientConfig:
    """Read the `[client]` section of `path`; `service`, `port`, `backend` and `tier` come from the
    command line.

    Raises:
        ConfigError: one sentence naming the key that is wrong.
    """
    parser = _read(path)
    section = dict(parser["client"]) if parser.has_section("client") else {}
    _unknown_keys("client", section, _CLIENT_KEYS)
    defaults = ClientConfig()
    name = (service or section.get("service", defaults.service)).strip().lower()
    if not SERVICE_NAME.match(name):
        raise ConfigError(f"--service {name!r} is not a valid service name; use lowercase letters, digits, '-' and '_'.")
    job = _job_settings("[client]", section)
    for other in parser.sections():
        if other == "client":
            continue
        if not other.startswith("service.") or not SERVICE_NAME.match(other[len("service."):]):
            raise ConfigError(f"section [{other}] is not known; use [client], or [service.NAME] for the job "
                              f"settings of one service.")
        _unknown_keys(other, parser[other], _JOB_KEYS)
        if other == f"service.{name}":
            job.update(_job_settings(f"[{other}]", parser[other]))
    server_url, server_url_key = _overridden(section, "client", "server_url", environ)
    advertise_url, advertise_url_key = _overridden(section, "client", "advertise_url", environ)
    chosen = (backend or section.get("backend", defaults.backend)).strip().lower()
    if chosen not in BACKENDS:
        raise ConfigError(f"{'--backend' if backend else '[client] backend'} must be local or slurm, got {chosen!r}.")
    partition = section.get("partition", "").strip()
    if partition and not re.match(r"^[A-Za-z0-9_.,-]{1,128}$", partition):
        raise ConfigError(f"[client] partition must be a Slurm partition name (letters, digits, '_', '.', '-'), "
                          f"got {partition!r}.")
    jobcomp_log = section.get("jobcomp_log", defaults.jobcomp_log).strip()
    config = ClientConfig(
        service=name,
        host=section.get("host", defaults.host).strip(),
        port=_int("[client] port", section.get("port", str(defaults.port)), 1, 65535),
        data_dir=environ.get("DATA_PATH") or section.get("data_dir", defaults.data_dir).strip(),
        slots=_int("[client] slots", section.get("slots", str(defaults.slots)), 1, 4096),
        server_url=_url(server_url_key, server_url) if server_url.strip() else "",
        actor_admin_port=_int("[client] actor_admin_port", section.get("actor_admin_port", "0"), 0, 65535),
        retention_hours=_hours("[client] retention_hours", section.get("retention_hours", str(defaults.retention_hours))),
        max_upload_mb=_int("[client] max_upload_mb", section.get("max_upload_mb", str(defaults.max_upload_mb)), 1, 1 << 20),
        threads=_int("[client] threads", section.get("threads", str(defaults.threads)), 1, 256),
        connections=_connections(section, "client"),
        **_logging(section, "client", log_level, environ),
        advertise_url=_url(advertise_url_key, advertise_url) if advertise_url.strip() else "",
        cluster_secret=_cluster_secret(section, "client", environ),
        backend=chosen,
        slurm_workdir=section.get("slurm_workdir", "").strip(),
        partition=partition,
        sbatch_args=_sbatch_args(section.get("sbatch_args", "")),
        max_jobs=_int("[client] max_jobs", section.get("max_jobs", str(defaults.max_jobs)), 1, 4096),
        poll_interval=_seconds("[client] poll_interval", section.get("poll_interval", str(defaults.poll_interval))),
        jobcomp_log=jobcomp_log,
        metrics_public=_bool("[client] metrics_public", section.get("metrics_public", "false")),
        tier=_int("[client] tier", section.get("tier", str(defaults.tier)), 1, MAX_TIER),
        **job,
    )
    if port is not None:
        config = replace(config, port=_int("--port", str(port), 1, 65535))
    if tier is not None:
        config = replace(config, tier=_int("--tier", str(tier), 1, MAX_TIER))
    if config.backend == "slurm":
        # Slurm queues and runs the jobs: the node hands it as many at once as it advertises.
        config = replace(config, slots=config.max_jobs)
    for key in ("data_dir", "slurm_workdir"):
        try:
            getattr(config, key).format(service=config.service, port=config.port)
        except (KeyError, IndexError, ValueError):
            raise ConfigError(f"[client] {key} may only use the placeholders {{service}} and {{port}}.") from None
    if not config.cluster_secret and not is_loopback(config.host):
        raise ConfigError(f"[client] host {config.host} is not a loopback address and cluster_secret is empty; "
                          f"set the same cluster_secret here, or in CLUSTER_SECRET, as the server's.")
    return config
