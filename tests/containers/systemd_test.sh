#!/usr/bin/env bash
# The systemd units under a real systemd (make test-systemd; not part of make test): a Debian 12
# container with systemd as PID 1 (tests/containers/systemd.Containerfile), the install procedure of
# docs/deploy.md ("systemd", Install) run in it as written, then: both units active, their state
# directories made and owned by the user, the README's example job completed and its zip downloaded,
# the executor's start block (bubblewrap sandbox; cgroups or rlimits), SIGKILL of the executor's main
# process (restarted, the job still completes), `systemctl stop` of the executor with a job running
# (drained: job Completed, nothing of the unit left), `systemctl stop` of the server (nothing left).
# Prints the time of each step. Publishes no port: every HTTP call is `podman exec … curl` inside.
# Needs podman (tested: 4.3.1, runc, cgroup v1 host). The image localhost/orchsd-host:latest is kept
# as the build cache (KEEP_IMAGE=0 removes it too); the container is removed (KEEP_CONTAINER=1 keeps
# that of a failed run).
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${IMAGE:-localhost/orchsd-host:latest}
NAME=orchsd-$$
KEEP_IMAGE=${KEEP_IMAGE:-1}
CTX=$(mktemp -d /tmp/orchsd-ctx.XXXXXX)
S=http://127.0.0.1:5000
EXECUTOR=orchestrator-executor@example.service
SERVER=orchestrator-server.service
OLD_IMAGE=$(podman image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)

. tests/containers/common.sh
KEEP_CONTAINER=${KEEP_CONTAINER:-0}   # 1: leave the container of a failed run, to look into it
cleanup() {
  rc=$?
  if [ "$KEEP_CONTAINER" = 1 ] && [ $rc != 0 ]; then echo "kept: podman exec -it $NAME bash; podman rm -f $NAME"
  else podman rm -f -t 5 "$NAME" >/dev/null 2>&1 || true; fi
  rm -rf "$CTX" "/tmp/$NAME-build.log" "/tmp/$NAME-install.log"
  if [ "$KEEP_IMAGE" = 0 ]; then podman rmi "$IMAGE" >/dev/null 2>&1 || true; fi
  true
}
trap cleanup EXIT
on() { podman exec -i "$NAME" "$@"; }         # a command in the container (the "host" of the docs)
fail() {
  echo "FAIL: $*"
  on systemctl status --no-pager -n 0 "$SERVER" "$EXECUTOR" >&2 2>&1 || true
  on journalctl --no-pager -n 60 -u "$SERVER" -u "$EXECUTOR" >&2 2>&1 || true
  exit 1
}
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {"d": d}))' "$1"; }
job() { on curl -fsS "$S/jobs/$1"; }
status_is() { [ "$(job "$1" | json 'd["status"]')" = "$2" ]; }
completed() { [ "$(on curl -s -o /dev/null -w '%{http_code}' -I "$S/download/$1")" = 200 ]; }
upload_sleep() {  # upload_sleep SECONDS USER: a job whose run.sh sleeps, then writes output.txt
  printf '#!/usr/bin/env bash\nsleep %s\necho slept > output.txt\n' "$1" | on sh -c 'cat > /tmp/run.sh'
  on curl -fsS -X POST "$S/upload" -F "file=@/tmp/run.sh" -F "user_id=$2" -F "service=example" | json 'd["id"]'
}
# The processes in a unit's cgroup, whichever hierarchy systemd uses (v1 name=systemd, or v2).
unit_procs() {
  on sh -c "for d in \$(find /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup -maxdepth 6 -type d -name '$1' 2>/dev/null); do find \"\$d\" -name cgroup.procs -exec cat {} +; done" | sort -u
}
main_pid() { on systemctl show -P MainPID "$1"; }

# --- the image: Debian 12 + systemd, the packages, /opt/orchestrator and its venv -------------------
git ls-files -z | tar -c --null -T - | tar -x -C "$CTX"    # what a clone has (tracked files, as edited)
podman build -q -f tests/containers/systemd.Containerfile -t "$IMAGE" "$CTX" >/tmp/$NAME-build.log 2>&1 \
  || { tail -30 /tmp/$NAME-build.log; fail "build"; }
rm -f /tmp/$NAME-build.log
NEW_IMAGE=$(podman image inspect -f '{{.Id}}' "$IMAGE")
if [ -n "$OLD_IMAGE" ] && [ "$OLD_IMAGE" != "$NEW_IMAGE" ]; then podman rmi "$OLD_IMAGE" >/dev/null 2>&1 || true; fi
lap "build (image $IMAGE)"

# systemd as PID 1. bubblewrap inside a container: without seccomp=unconfined podman's profile stops
# it ("Can't set hostname to job"), without systempaths=unconfined its /proc mount is refused (the
# masked /proc paths); the same two options compose.yaml gives the executor. CAP_SYS_ADMIN lets systemd
# make the units' mount namespaces: without it systemd 252 runs them without ProtectSystem=,
# PrivateTmp=, ProtectHome= (silently, "container manager?") and this test would not see the units
# as a host runs them (checked below in /proc/PID/mountinfo). On a cgroup v1 host
# podman gives systemd no cgroup2 hierarchy: it then never hears that a unit's cgroup emptied (podman
# masks the v1 release_agent), and a unit whose main process died stays "deactivating" until
# TimeoutStopSec (1 h for the executor). The host's /sys/fs/cgroup/unified, when there is one, puts
# systemd in its hybrid mode, which tracks processes there. No network: all is local.
CGROUP2=()
if [ -d /sys/fs/cgroup/unified ] && [ ! -e /sys/fs/cgroup/cgroup.controllers ]; then
  CGROUP2=(-v /sys/fs/cgroup/unified:/sys/fs/cgroup/unified:rw)
fi
podman run -d --name "$NAME" --systemd=always --network none --cap-add SYS_ADMIN "${CGROUP2[@]}" \
  --security-opt seccomp=unconfined --security-opt systempaths=unconfined "$IMAGE" >/dev/null || fail "podman run"
booted() { s=$(on systemctl is-system-running 2>/dev/null || true); [ "$s" = running ] || [ "$s" = degraded ]; }
wait_for 60 booted || fail "systemd did not boot: $(on systemctl is-system-running 2>&1 || true)"
lap "systemd booted ($(on systemctl --version | head -1 | cut -d' ' -f1-2), $(on systemctl is-system-running 2>/dev/null || true))"

# --- docs/deploy.md, Install: the steps after the code and venv, as written ------------------------
on bash -euo pipefail -c '
useradd --system --home-dir /var/lib/orchestrator --no-create-home --shell /usr/sbin/nologin orchestrator
cd /opt/orchestrator
install -d -m 0750 -g orchestrator /etc/orchestrator
install -m 0640 -g orchestrator conf/server.ini /etc/orchestrator/server.ini
install -m 0640 -g orchestrator conf/client.ini /etc/orchestrator/client-example.ini
install -m 0644 deploy/systemd/orchestrator-server.service deploy/systemd/orchestrator-executor@.service \
  /etc/systemd/system/
systemctl daemon-reload
systemctl enable --now orchestrator-server.service orchestrator-executor@example.service
' >/tmp/$NAME-install.log 2>&1 || { cat /tmp/$NAME-install.log; fail "install steps"; }
rm -f /tmp/$NAME-install.log
lap "installed: user, /etc/orchestrator, units, enable --now"

wait_for 60 on curl -fsS "$S/health" || fail "server /health"
executor_alive() { on curl -fsS "$S/executors" | json 'any(e["url"] == "http://127.0.0.1:9000" and e["state"] == "alive" for e in (d.get("executors", d) if isinstance(d, dict) else d))' | grep -qx True; }
wait_for 60 executor_alive || fail "executor not alive at the server: $(on curl -s "$S/executors")"
for u in "$SERVER" "$EXECUTOR"; do
  [ "$(on systemctl is-active "$u")" = active ] || fail "$u not active"
  [ "$(on systemctl show -P NRestarts "$u")" = 0 ] || fail "$u restarted while starting"
done
lap "both units active, server healthy, executor alive"

for u in "$SERVER" "$EXECUTOR"; do
  d=/var/lib/$(on systemctl show -P StateDirectory "$u")
  owner=$(on stat -c '%U:%G %a' "$d") || fail "$u: no state directory $d"
  [ "$owner" = "orchestrator:orchestrator 750" ] || fail "$u: $d is $owner"
  echo "  $u: StateDirectory $d ($owner)"
done
on test -f /var/lib/orchestrator/server/orchestrator.sqlite || fail "no database in the server's state directory"
lap "state directories made, owned by orchestrator"

# The hardening applied, as the node sees its mounts: the system read-only (ProtectSystem=strict) but
# its state directory, a /tmp of its own (PrivateTmp=), /home made inaccessible (ProtectHome=).
mount_opts() { on awk -v m="$2" '$5 == m {o = $6} END {print o}' "/proc/$1/mountinfo"; }
for u in "$SERVER" "$EXECUTOR"; do
  p=$(main_pid "$u"); d=/var/lib/$(on systemctl show -P StateDirectory "$u")
  [[ "$(mount_opts "$p" /)" == ro,* ]] || fail "$u: / is not read-only for it ($(mount_opts "$p" /))"
  [[ "$(mount_opts "$p" "$d")" == rw,* ]] || fail "$u: $d is not writable for it"
  [ -n "$(mount_opts "$p" /tmp)" ] && [ -n "$(mount_opts "$p" /home)" ] || fail "$u: no private /tmp or no ProtectHome"
done
lap "hardening applied: / read-only, state dir rw, own /tmp"

# --- the README's example upload -------------------------------------------------------------------
id=$(on curl -fsS -X POST "$S/upload" -F "file=@/opt/orchestrator/example/run.sh" \
  -F "file=@/opt/orchestrator/example/input.pdb" -F "user_id=1" -F "service=example" | json 'd["id"]') || fail "upload"
wait_for 60 completed "$id" || fail "job $id did not complete: $(job "$id")"
on curl -fsS -o /tmp/results.zip "$S/download/$id" || fail "download"
on python3 - <<'PY' || fail "zip content"
import zipfile
z = zipfile.ZipFile("/tmp/results.zip"); out = z.read("output.txt").decode()
assert "Computation complete!" in out and "input.pdb" in out, out
assert {"run.sh", "input.pdb", "stdout.log", "stderr.log"} <= set(z.namelist()), z.namelist()
print("  output.txt:", out.splitlines()[-2])
PY
lap "job $id completed, zip downloaded and checked"

# --- the executor's start block: the sandbox, and cgroups (Delegate=yes) or rlimits -----------------
start=$(on journalctl --no-pager -o cat -u "$EXECUTOR")
grep -q "jobs run in a bubblewrap sandbox" <<<"$start" || fail "the executor does not say jobs run in bubblewrap"
limits=$(grep -m1 "limits per job" <<<"$start" || true)
echo "  sandbox: $(grep -m1 'jobs run in' <<<"$start" | sed 's/^ *//')"
echo "  $(sed 's/^ *//' <<<"$limits")"
grep -m1 "orchestrator.cgroups" <<<"$start" | sed 's/^.*orchestrator.cgroups: /  cgroups: /' || true
if on test -f /sys/fs/cgroup/cgroup.controllers; then   # a cgroup v2 host: Delegate=yes must give cgroups
  grep -q "cgroup v2 under .*/orchestrator-executor@example.service/" <<<"$limits" \
    || fail "cgroup v2 with Delegate=yes, but jobs get no cgroups of the unit's own: $limits"
  cgroups="cgroup v2 (Delegate=yes)"
else
  cgroups="none: cgroup v1 host, rlimits only"
fi
lap "start block: bubblewrap sandbox"
echo "  cgroups for jobs: $cgroups"

# --- SIGKILL of the executor's main process while a job runs: Restart=on-failure --------------------
id2=$(upload_sleep 4 2) || fail "upload of the sleeping job"
wait_for 30 status_is "$id2" Running || fail "job $id2 never ran: $(job "$id2")"
pid=$(main_pid "$EXECUTOR")
on systemctl kill --kill-whom=main --signal=SIGKILL "$EXECUTOR"
restarted() { [ "$(on systemctl show -P NRestarts "$EXECUTOR")" = 1 ] && [ "$(on systemctl is-active "$EXECUTOR")" = active ] \
  && p=$(main_pid "$EXECUTOR") && [ "$p" != 0 ] && [ "$p" != "$pid" ]; }
wait_for 30 restarted || fail "$EXECUTOR not restarted after SIGKILL of $pid"
lap "SIGKILL of main pid $pid: restarted as $(main_pid "$EXECUTOR")"
wait_for 90 completed "$id2" || fail "job $id2 did not complete after the restart: $(job "$id2")"
echo "  job $id2: $(job "$id2" | json "'status %s, attempts %s, exit code %s' % (d['status'], d['attempts'], d['exit_code'])")"
[ "$(job "$id2" | json 'd["attempts"]')" = 2 ] || fail "job $id2 did not run again after the node's SIGKILL: $(job "$id2")"
lap "job $id2 completed after the restart"

# --- systemctl stop of the executor with a job running: it drains -----------------------------------
id3=$(upload_sleep 5 3) || fail "upload of the draining job"
wait_for 30 status_is "$id3" Running || fail "job $id3 never ran: $(job "$id3")"
[ -n "$(unit_procs "$EXECUTOR")" ] || fail "cannot see the processes of $EXECUTOR's cgroup (the check below would be void)"
echo "  $EXECUTOR: $(unit_procs "$EXECUTOR" | wc -l) processes in its cgroup with job $id3 running"
s0=$(date +%s%N)
on systemctl stop "$EXECUTOR" || fail "systemctl stop $EXECUTOR"
echo "  systemctl stop took $(since "$s0") s"
wait_for 10 status_is "$id3" Completed || fail "job $id3 not completed by the drain: $(job "$id3")"
[ "$(job "$id3" | json 'd["attempts"]')" = 1 ] || fail "job $id3 was run again, not drained: $(job "$id3")"
state=$(on systemctl show -P ActiveState "$EXECUTOR"); result=$(on systemctl show -P Result "$EXECUTOR")
[ "$state" = inactive ] && [ "$result" = success ] || fail "$EXECUTOR: $state, $result after stop"
[ -z "$(unit_procs "$EXECUTOR")" ] || fail "processes of $EXECUTOR left: $(unit_procs "$EXECUTOR")"
[ -z "$(on systemctl show -P ControlGroup "$EXECUTOR")" ] || fail "$EXECUTOR still has a cgroup"
on pgrep -f 'run_client.py|bwrap' >/dev/null && fail "left: $(on pgrep -af 'run_client.py|bwrap')"
lap "stop drained the executor: job $id3 completed, nothing left"

# --- systemctl stop of the server -------------------------------------------------------------------
s0=$(date +%s%N)
on systemctl stop "$SERVER" || fail "systemctl stop $SERVER"
echo "  systemctl stop took $(since "$s0") s"
state=$(on systemctl show -P ActiveState "$SERVER"); result=$(on systemctl show -P Result "$SERVER")
[ "$state" = inactive ] && [ "$result" = success ] || fail "$SERVER: $state, $result after stop"
[ -z "$(unit_procs "$SERVER")" ] || fail "processes of $SERVER left: $(unit_procs "$SERVER")"
on pgrep -u orchestrator >/dev/null && fail "processes of orchestrator left: $(on pgrep -u orchestrator -a)"
lap "stop: server inactive, no process of the user left"

podman rm -f -t 5 "$NAME" >/dev/null
podman ps -a --format '{{.Names}}' | grep -qx "$NAME" && fail "container $NAME left"
lap "container removed"
echo "PASS"
