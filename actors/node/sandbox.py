"""How a job's `bash run.sh` is wrapped: its sandbox, its environment, its per-process limits.

Runs in an executor node: `Wrapping.probe` once at start (run_client.py, then the ExecutorActor),
`command` and `environment` for every job (the local backend launches the command; the Slurm
backend hands it to sbatch, so it runs inside the allocation).

A job's `run.sh` is untrusted code. With `sandbox = bwrap` it runs in a bubblewrap sandbox:
- it sees the system's directories (/usr, /bin, /lib…, and a short list of /etc files, copied
  when the node starts) read-only,
  the folders of `read_only_paths` read-only, and its own folder read-write, at their real paths;
  nothing else: not the node's data folder, other jobs, the server's data, or any home;
- a private /tmp (a tmpfs of at most max_output_mb), /proc (its own processes only) and /dev;
- no network but a loopback of its own, unless `network = true`;
- no capabilities, even when the node runs as root, and a session of its own (no terminal);
- its processes live in a PID namespace: when `run.sh` ends, or the node kills it, or the node's
  process dies, every process it started dies with it, double forks and `setsid` included.
With `sandbox = none` it sees the node's files as the node's user does, but still runs in a PID
namespace of its own where the node can make one (root, or unprivileged user namespaces).

Either way the environment is reduced to PATH, HOME (the job's folder), TMPDIR, LANG and the
variables named in `pass_env`, and `prlimit` sets the per-process limits: open files, file size
(max_output_mb), no core dumps, and, where no cgroup limits the job (actors/node/job_cgroups.py), its
processes (per job, in its own user namespace) and its address space (max_memory_mb).
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from conf.settings import ClientConfig

log = logging.getLogger("orchestrator.sandbox")

#: The system's directories a sandboxed job may read (symbolic links, as on merged-/usr systems, are
#: recreated as links).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: What a job may read of /etc: what programs need to run, resolve names and check certificates.
#: Not the rest (private keys, passwords, the cluster's configuration).
ETC_ENTRIES = ("alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "passwd",
               "group", "nsswitch.conf", "hosts", "host.conf", "resolv.conf", "gai.conf", "services",
               "protocols", "ssl/certs", "ssl/openssl.cnf", "ca-certificates", "ca-certificates.conf",
               "pki/tls/certs", "pki/tls/openssl.cnf", "pki/ca-trust", "crypto-policies", "mime.types",
               "os-release", "debian_version", "fonts", "R")
JOB_PATH = "/usr/local/bin:/usr/bin:/bin"
#: SIGXFSZ: a process wrote past its file-size limit (max_output_mb); the shell reports 128 + 25.
FILE_TOO_LARGE_EXIT = 153


class SandboxUnavailable(Exception):
    """The configured sandbox cannot run on this node; the message says why and what to do."""


@dataclass(frozen=True)
class Wrapping:
    """What this node uses to wrap its jobs, found once at start."""

    sandbox: str                    #: "bwrap" or "none"
    prlimit: str
    bwrap: str | None = None
    #: sandbox = none: the command prefix that gives a job a PID namespace, if the node can.
    pid_namespace: tuple[str, ...] = ()
    #: Each job runs in a user namespace of its own (a non-root node): RLIMIT_NPROC is then per job.
    own_user_namespace: bool = False
    #: sandbox = bwrap: a copy of the /etc entries a job may read, made at start (one bind mount
    #: for the sandbox's /etc instead of one per entry: each costs a job a fifth of a millisecond).
    etc: str | None = None

    @staticmethod
    def probe(config: ClientConfig) -> "Wrapping":
        """Find the tools and check that the configured sandbox works here.

        Raises:
            SandboxUnavailable: sandbox = bwrap (or left empty with bubblewrap installed) and bwrap
                cannot run a job here; prlimit (util-linux) is missing.
        """
        # NOTE: real paths: a job launches them where only the system's directories are visible.
        prlimit = _real(shutil.which("prlimit"))
        if prlimit is None:
            raise SandboxUnavailable("prlimit (util-linux) is not installed; it sets each job's limits")
        non_root = os.geteuid() != 0
        bwrap = _real(shutil.which("bwrap"))
        chosen = config.sandbox or ("bwrap" if bwrap else "none")
        if chosen == "bwrap":
            if bwrap is None:
                raise SandboxUnavailable("sandbox = bwrap, but bubblewrap is not installed "
                                         "(apt-get install bubblewrap), or set sandbox = none")
            wrapping = Wrapping("bwrap", prlimit, bwrap, own_user_namespace=non_root,
                                etc=copy_etc(os.path.join(config.data_path, "sandbox-etc")))
            with tempfile.TemporaryDirectory() as folder:
                problem = _fails(wrapping.command(config, folder, ["true"]), environment(config, folder))
            if problem:
                raise SandboxUnavailable(f"bubblewrap cannot start a sandbox here: {problem} ({bwrap_hint(in_container())}), "
                                         f"or set sandbox = none")
            return wrapping
        if not config.sandbox:
            log.warning("bubblewrap is not installed: jobs run without a sandbox (they can read what this node's "
                        "user can); install it (apt-get install bubblewrap), or set sandbox = none to silence this")
        return Wrapping("none", prlimit, pid_namespace=_pid_namespace(non_root), own_user_namespace=non_root)

    def describe(self, config: ClientConfig) -> str:
        if self.sandbox == "bwrap":
            return f"in a bubblewrap sandbox, {'with' if config.network else 'without'} network"
        return "without a sandbox" + (", each in a PID namespace of its own" if self.pid_namespace else "")

    def command(self, config: ClientConfig, folder: str, program: list[str] | None = None, *,
                limit_memory: bool = True, limit_processes: bool = True,
                binds: tuple[tuple[str, str], ...] = ()) -> list[str]:
        """The command that runs `program` (default: `bash run.sh`) in `folder` as this node's jobs run.

        `limit_memory` / `limit_processes`: set the rlimit fallbacks (False where a cgroup holds them).
        `binds`: (source, path in the sandbox) folders a TES task's absolute paths map to (sandbox =
        bwrap only).
        """
        folder = os.path.abspath(folder)  # NOTE: data_dir may be relative (make run's is)
        argv = [self.bwrap, *self.bwrap_options(config, folder, binds)] if self.sandbox == "bwrap" \
            else list(self.pid_namespace)
        argv += [self.prlimit, *self.limits(config, limit_memory, limit_processes)]
        return argv + (program or ["bash", "run.sh"])

    def limits(self, config: ClientConfig, limit_memory: bool, limit_processes: bool) -> list[str]:
        output = config.max_output_mb * 1024 * 1024
        options = [f"--nofile={config.max_open_files}:{config.max_open_files}", f"--fsize={output}:{output}",
                   "--core=0:0"]
        # NOTE: RLIMIT_NPROC counts every process of the user; only in a user namespace of the job's
        # own does it count the job's alone (and root ignores it).
        if limit_processes and self.own_user_namespace:
            options.append(f"--nproc={config.max_processes}:{config.max_processes}")
        if limit_memory and config.max_memory_mb:
            size = config.max_memory_mb * 1024 * 1024
            options.append(f"--as={size}:{size}")
        return options

    def bwrap_options(self, config: ClientConfig, folder: str, binds: tuple[tuple[str, str], ...] = ()) -> list[str]:
        # NOTE: the sandbox's own root (where the mount points were made) read-only too: a write
        # outside the job's folder and /tmp fails instead of vanishing with the sandbox. A TES
        # task's binds go before the read-only paths and the node's hidden folders (which they must
        # not uncover) and before the job's folder (which one of them may hold, e.g. /srv).
        extra = [arg for source, target in binds for arg in ("--bind", source, target)]
        return [*_system_options(config, self.etc), *extra, *_readable_options(config), "--bind", folder, folder,
                "--remount-ro", "/", "--chdir", folder, "--"]


@functools.lru_cache(maxsize=8)
def _system_options(config: ClientConfig, etc: str | None) -> tuple[str, ...]:
    """What bubblewrap is told for every job of a node, up to its read-only paths (`_readable_options`).
    Made once, not per job: it looks at the file system (links)."""
    options = ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--unshare-pid", "--unshare-ipc",
               "--unshare-uts", "--hostname", "job"]
    if not config.network:
        options.append("--unshare-net")
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            options += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            options += ["--ro-bind", path, path]
    if etc:
        options += ["--ro-bind", etc, "/etc"]
    options += ["--proc", "/proc", "--dev", "/dev",
                "--size", str(config.max_output_mb * 1024 * 1024), "--tmpfs", "/tmp",
                "--dir", "/var", "--symlink", "../tmp", "/var/tmp"]
    return tuple(options)


@functools.lru_cache(maxsize=8)
def _readable_options(config: ClientConfig) -> tuple[str, ...]:
    """The node's `read_only_paths`, and its own folders hidden again where they are under one. Made
    once, not per job: it looks at the file system (venvs' pyvenv.cfg, the node's folders)."""
    options: list[str] = []
    readable = visible_paths(config.read_only_paths)
    for path in readable:  # NOTE: after /tmp, which would hide a folder under it
        options += ["--ro-bind", path, path]
    # NOTE: a read-only folder may hold the node's own data (e.g. /opt with data in /opt/orch/var);
    # hide it again (run_client.py makes the node's folders before the sandbox is probed).
    for private in sorted({os.path.abspath(config.data_path), os.path.abspath(config.tasks_path)}):
        if os.path.isdir(private) and any(_inside(private, path) for path in readable):
            options += ["--tmpfs", private]
    return tuple(options)


def copy_etc(destination: str, source: str = "/etc") -> str:
    """Copy the ETC_ENTRIES that exist under `source` to `destination` (afresh), links kept as links."""
    partial = f"{destination}.part"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    for entry in ETC_ENTRIES:
        path = os.path.join(source, entry)
        target = os.path.join(partial, entry)
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.copytree(path, target, symlinks=True)
            elif os.path.lexists(path):
                shutil.copy2(path, target)  # a link to a file (os-release) is copied as the file
        except OSError as exc:
            log.warning("the sandbox's /etc lacks %s: %s", entry, exc)
    shutil.rmtree(destination, ignore_errors=True)
    os.replace(partial, destination)
    return os.path.abspath(destination)


def environment(config: ClientConfig, folder: str, node_environ: dict[str, str] | None = None) -> dict[str, str]:
    """The job's environment: nothing of the node's but the variables `pass_env` names."""
    node_environ = os.environ if node_environ is None else node_environ
    env = {"PATH": JOB_PATH, "HOME": folder, "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
    for name in config.pass_env:
        if name in node_environ:
            env[name] = node_environ[name]
    return env


def visible_paths(read_only_paths: tuple[str, ...]) -> list[str]:
    """`read_only_paths`, each followed by the Python installation it needs if it is a virtual
    environment (a venv's interpreter and standard library live where it was made from)."""
    found: list[str] = []
    for path in read_only_paths:
        found.append(path)
        home = _venv_home(path)
        if home and home not in found:
            found.append(home)
    return found


def _venv_home(path: str) -> str | None:
    try:
        with open(os.path.join(path, "pyvenv.cfg")) as handle:
            for line in handle:
                key, _, value = line.partition("=")
                if key.strip() == "home" and value.strip():
                    return os.path.dirname(os.path.realpath(value.strip()))  # .../bin → its prefix
    except OSError:
        pass
    return None


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _real(path: str | None) -> str | None:
    return os.path.realpath(path) if path else None


def _fails(argv: list[str], env: dict[str, str] | None = None) -> str | None:
    """None if `argv` runs and exits 0, else what went wrong."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.decode("utf-8", "replace").strip() or f"exit {done.returncode}")


def _pid_namespace(non_root: bool) -> tuple[str, ...]:
    """sandbox = none: a prefix that runs the job in a PID namespace of its own (its leftovers die
    with it) and dies with the node's process; () if this node cannot make one."""
    unshare, setpriv = _real(shutil.which("unshare")), _real(shutil.which("setpriv"))
    if not (unshare and setpriv):
        return ()
    user = ["--user", "--map-current-user"] if non_root else []
    prefix = (setpriv, "--pdeathsig", "KILL", unshare, *user, "--pid", "--fork", "--kill-child")
    if _fails([*prefix, "true"], {"PATH": JOB_PATH}):
        log.warning("jobs cannot get a PID namespace here (unshare failed): processes a job leaves in the "
                    "background outlive it unless a cgroup holds the job")
        return ()
    return prefix


def in_container() -> bool:
    """Whether this node runs in a podman or Docker container (each leaves its mark at the root)."""
    return os.path.exists("/run/.containerenv") or os.path.exists("/.dockerenv")


def bwrap_hint(container: bool) -> str:
    """What most often lets bubblewrap start where it failed: in a container, the two options the
    runtime's defaults deny it (docs/deploy.md, the jobs' sandbox); on a host, user namespaces."""
    if container:
        return ("in a container, bubblewrap needs --security-opt seccomp=unconfined and "
                "--security-opt systempaths=unconfined, as compose.yaml gives the executors")
    return "if that is about user namespaces, allow unprivileged ones"
