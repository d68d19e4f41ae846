#!/usr/bin/env bash
# start-local-slurm.sh - start a real single-node Slurm cluster on this host (the
# orchestrator's Slurm tests use it: tests/slurm_cluster.py),
# without systemd and without cgroups.
#
# Checked on Debian 12 (bookworm) as root: slurm-wlm 22.05.8, munge 0.5.15,
# (optional accounting: slurmdbd 22.05.8 + mariadb 10.11).
#
#   * installs slurm-wlm + munge with apt-get if they are missing
#   * writes /etc/slurm/slurm.conf (a node that matches `slurmd -C`)
#   * starts munged, slurmctld and slurmd as ordinary daemons (they fork
#     into the background, re-parent to PID 1 and write PID files)
#   * LOCAL_SLURM_ACCOUNTING=1: also mariadbd + slurmdbd, so sacct works
#   * waits until `sinfo` reports the node as idle
#   * writes "name pid" lines to $LOCAL_SLURM_PIDFILE for stop-local-slurm.sh
#
# Idempotent: if the cluster from an earlier run is still healthy and has the
# same configuration, it does nothing and exits 0. If it is half up or was
# configured differently, it stops it (stop-local-slurm.sh) and starts again.
#
# Environment knobs (all optional):
#   LOCAL_SLURM_PIDFILE      default /run/local-slurm/pids
#   LOCAL_SLURM_CLUSTER      ClusterName, default localcluster
#   LOCAL_SLURM_PARTITION    partition name, default debug
#   LOCAL_SLURM_MIN_JOB_AGE  seconds a finished job stays visible to
#                            squeue/scontrol, default 3600
#   LOCAL_SLURM_CPUS         pretend the node has this many CPUs (adds
#                            SlurmdParameters=config_overrides); default: the
#                            real count from `slurmd -C`
#   LOCAL_SLURM_ACCOUNTING   1 = run slurmdbd + mariadb so that sacct works
#                            (installs slurmdbd, mariadb-server: ~30 s more)
#   LOCAL_SLURM_KEEP_STATE   1 = keep old jobs, job-ID counter and accounting
#                            DB (default 0: wipe them, job IDs start at 1)
#   LOCAL_SLURM_WAIT         seconds to wait for the node to be idle, default 60
#   LOCAL_SLURM_NO_INSTALL   1 = never run apt-get
set -euo pipefail

PIDFILE=${LOCAL_SLURM_PIDFILE:-/run/local-slurm/pids}
CLUSTER=${LOCAL_SLURM_CLUSTER:-localcluster}
PARTITION=${LOCAL_SLURM_PARTITION:-debug}
MIN_JOB_AGE=${LOCAL_SLURM_MIN_JOB_AGE:-3600}
FAKE_CPUS=${LOCAL_SLURM_CPUS:-}
ACCOUNTING=${LOCAL_SLURM_ACCOUNTING:-0}
KEEP_STATE=${LOCAL_SLURM_KEEP_STATE:-0}
WAIT_S=${LOCAL_SLURM_WAIT:-60}
NO_INSTALL=${LOCAL_SLURM_NO_INSTALL:-0}

CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
MUNGE_RUN=/run/munge
MUNGE_KEY=/etc/munge/munge.key
MYSQL_RUN=/run/mysqld
DB_NAME=slurm_acct_db
DB_PASS=slurm-local-test     # test cluster only; the DB listens on localhost
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

log() { echo "[start-local-slurm] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (slurmd has to switch to the job owner's uid)"

# pid_alive NAME PID: PID runs, is called NAME, and is not a zombie (PID 1
# in containers/VMs may reap exited daemons late)
pid_alive() {
    [ -n "${2:-}" ] && [ -r "/proc/$2/comm" ] && [ "$(cat "/proc/$2/comm" 2>/dev/null)" = "$1" ] || return 1
    local st
    st=$(sed -n 's/^.*) \(.\).*/\1/p' "/proc/$2/stat" 2>/dev/null)
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
pid_from_file() { [ -s "$1" ] && tr -dc '0-9' < "$1" || true; }
# wait_pidfile NAME FILE [TENTHS]: print the pid once FILE names a live NAME
wait_pidfile() {
    local pid
    for _ in $(seq 1 "${3:-100}"); do
        pid=$(pid_from_file "$2")
        if pid_alive "$1" "$pid"; then echo "$pid"; return 0; fi
        sleep 0.1
    done
    return 1
}
node_state() { sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -n1 || true; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# ---------------------------------------------------------------- install ---
apt_install() {
    [ "$NO_INSTALL" = 1 ] && die "$* missing and LOCAL_SLURM_NO_INSTALL=1"
    log "installing $* with apt-get"
    local t0; t0=$(date +%s)
    export DEBIAN_FRONTEND=noninteractive
    # The packages' postinst scripts try to start the services; in a
    # container policy-rc.d denies that (harmless), under systemd they would
    # start with the packaged config (stopped again below via pid files).
    if ! apt-get install -y -q --no-install-recommends "$@" >/tmp/local-slurm-apt.log 2>&1; then
        apt-get update -q >>/tmp/local-slurm-apt.log 2>&1 || true
        apt-get install -y -q --no-install-recommends "$@" >>/tmp/local-slurm-apt.log 2>&1 \
            || { tail -n 30 /tmp/local-slurm-apt.log >&2; die "apt-get install $* failed"; }
    fi
    log "installed in $(( $(date +%s) - t0 ))s"
}
have() { command -v "$1" >/dev/null 2>&1; }
need=()
for b in munged munge unmunge mungekey; do have "$b" || need=(munge); done
for b in slurmctld slurmd sbatch squeue scontrol scancel sinfo; do have "$b" || { need+=(slurm-wlm); break; }; done
if [ "$ACCOUNTING" = 1 ]; then
    have slurmdbd || need+=(slurmdbd)
    have mariadbd || need+=(mariadb-server)
fi
[ ${#need[@]} -gt 0 ] && apt_install "${need[@]}"

NODE=$(hostname -s)
if [ -z "$NODE" ] && [ -s /etc/hostname ]; then
    # Some VMs boot without setting the kernel's hostname; set it as an init system would.
    hostname "$(head -n1 /etc/hostname)"
    NODE=$(hostname -s)
fi
[ -n "$NODE" ] || die "empty hostname"

# ------------------------------------------------------------- slurm.conf ---
# Take the node's real topology and memory from slurmd itself, so that the
# node is not drained for "Low RealMemory" / "Low socket*core*thread count".
HW=$(slurmd -C | head -n1 | sed -e 's/^NodeName=[^ ]* //')
if [ -n "$FAKE_CPUS" ]; then
    MEM=$(printf '%s\n' "$HW" | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    HW="CPUs=$FAKE_CPUS RealMemory=$MEM"
    OVERRIDES="SlurmdParameters=config_overrides"
else
    OVERRIDES="#SlurmdParameters=config_overrides"
fi
if [ "$ACCOUNTING" = 1 ]; then
    ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
else
    ACCT="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

NEW_CONF=$(cat <<EOF
# Written by start-local-slurm.sh - single-node test cluster, no systemd,
# no cgroups. docs/slurm.md (and the comments below) explain the lines.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true

# no cgroups / systemd needed
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$ACCT
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.log

SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR

SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
DependencyParameters=kill_invalid_depend
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
EnforcePartLimits=ALL
ReturnToService=2
MinJobAge=$MIN_JOB_AGE
KillWait=5
$OVERRIDES

NodeName=$NODE NodeAddr=127.0.0.1 $HW State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)

# ------------------------------------------------- already up? (idempotent) ---
if [ -s "$PIDFILE" ]; then
    ok=1
    while read -r name pid; do
        [ -n "$name" ] || continue
        pid_alive "$name" "$pid" || ok=0
    done < "$PIDFILE"
    grep -q '^slurmd ' "$PIDFILE" && grep -q '^slurmctld ' "$PIDFILE" || ok=0
    if [ "$ACCOUNTING" = 1 ]; then grep -q '^slurmdbd ' "$PIDFILE" || ok=0; fi
    [ -r "$CONF" ] && [ "$(cat "$CONF")" = "$NEW_CONF" ] || ok=0
    if [ "$ok" = 1 ]; then
        st=$(node_state)
        case "$st" in
            idle|mix|alloc|comp) log "already running (node $NODE is $st); nothing to do"; cat "$PIDFILE"; exit 0 ;;
        esac
    fi
    log "a previous cluster is down, half up or configured differently; stopping it first"
    "$HERE/stop-local-slurm.sh" || true
fi
# Daemons left behind without our pid file (an earlier run whose pid file
# was lost, or services the package started under systemd) hold the ports
# 6817-6819: stop them through their own pid files.
for pair in "slurmd:$RUN_DIR/slurmd.pid" "slurmctld:$RUN_DIR/slurmctld.pid" "slurmdbd:$RUN_DIR/slurmdbd.pid"; do
    name=${pair%%:*}; f=${pair#*:}; pid=$(pid_from_file "$f")
    if pid_alive "$name" "$pid"; then
        log "stopping stray $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do pid_alive "$name" "$pid" || break; sleep 0.1; done
        if pid_alive "$name" "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
done

T_START=$(date +%s%N)
mkdir -p "$(dirname "$PIDFILE")"
: > "$PIDFILE"

# ------------------------------------------------------------------ munge ---
if [ ! -s "$MUNGE_KEY" ]; then
    log "creating munge key"
    mkdir -p /etc/munge
    mungekey --create --keyfile="$MUNGE_KEY" --force 2>/dev/null \
        || dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
fi
# munged refuses to start unless the key is private to the munge user
chown munge:munge /etc/munge "$MUNGE_KEY"
chmod 0700 /etc/munge
chmod 0400 "$MUNGE_KEY"
install -d -o munge -g munge -m 0755 "$MUNGE_RUN" /var/lib/munge
install -d -o munge -g munge -m 0700 /var/log/munge

# Only probe with `munge -n` when a munged process exists: against a stale
# socket the munge client retries for ~2 s before failing.
if pid_alive munged "$(pid_from_file "$MUNGE_RUN/munged.pid")" \
        && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already answers; using it (the stop script will leave it running)"
else
    # munged daemonizes by itself and writes $MUNGE_RUN/munged.pid
    runuser -u munge -- /usr/sbin/munged
    pid=$(wait_pidfile munged "$MUNGE_RUN/munged.pid") || die "munged did not start (see /var/log/munge/munged.log)"
    for _ in $(seq 1 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || die "munged does not work (see /var/log/munge/munged.log)"
    echo "munged $pid" >> "$PIDFILE"
fi

# ----------------------------------------------------------- directories ---
install -d -o slurm -g slurm -m 0755 "$STATE_DIR" "$LOG_DIR" "$RUN_DIR"
install -d -o root -g root -m 0755 "$SPOOL_DIR"
if [ "$KEEP_STATE" != 1 ]; then
    # fresh cluster: no old jobs, job IDs restart at 1, empty logs
    find "$STATE_DIR" "$SPOOL_DIR" -mindepth 1 -delete
    for f in slurmctld.log slurmd.log slurmdbd.log jobcomp.log; do : > "$LOG_DIR/$f"; done
    chown slurm:slurm "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmdbd.log" "$LOG_DIR/jobcomp.log"
    chmod 0644 "$LOG_DIR/jobcomp.log"
fi
rm -f "$RUN_DIR/slurmctld.pid" "$RUN_DIR/slurmd.pid" "$RUN_DIR/slurmdbd.pid"

printf '%s\n' "$NEW_CONF" > "$CONF.tmp"
chmod 0644 "$CONF.tmp"
mv -f "$CONF.tmp" "$CONF"

# ----------------------------------------------- accounting (optional) ---
if [ "$ACCOUNTING" = 1 ]; then
    if pid_alive mariadbd "$(pid_from_file "$MYSQL_RUN/mysqld.pid")" && mariadb -e 'select 1' >/dev/null 2>&1; then
        log "mariadbd already running; using it (the stop script will leave it running)"
    else
        install -d -o mysql -g root -m 0755 "$MYSQL_RUN"
        [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
        # mariadbd stays in the foreground: detach it from this shell
        setsid /usr/sbin/mariadbd --user=mysql --pid-file="$MYSQL_RUN/mysqld.pid" \
            --socket="$MYSQL_RUN/mysqld.sock" --bind-address=127.0.0.1 \
            >"$LOG_DIR/mariadbd.log" 2>&1 </dev/null &
        pid=$(wait_pidfile mariadbd "$MYSQL_RUN/mysqld.pid" 300) \
            || { tail -n 20 "$LOG_DIR/mariadbd.log" >&2; die "mariadbd did not start"; }
        for _ in $(seq 1 100); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
        echo "mariadbd $pid" >> "$PIDFILE"
    fi
    # root talks to mariadb through the unix socket (unix_socket auth)
    [ "$KEEP_STATE" = 1 ] || mariadb -e "DROP DATABASE IF EXISTS $DB_NAME"
    mariadb -e "CREATE DATABASE IF NOT EXISTS $DB_NAME;
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
        ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
        GRANT ALL ON $DB_NAME.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;" \
        || die "could not prepare the accounting database"
    cat > "$DBD_CONF" <<EOF
# Written by start-local-slurm.sh
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=slurm
PidFile=$RUN_DIR/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=$DB_NAME
StorageUser=slurm
StoragePass=$DB_PASS
EOF
    # slurmdbd refuses a slurmdbd.conf readable by others
    chown slurm:slurm "$DBD_CONF"; chmod 0600 "$DBD_CONF"
    /usr/sbin/slurmdbd || die "slurmdbd failed to start (see $LOG_DIR/slurmdbd.log)"
    pid=$(wait_pidfile slurmdbd "$RUN_DIR/slurmdbd.pid") \
        || { tail -n 20 "$LOG_DIR/slurmdbd.log" >&2; die "slurmdbd did not come up"; }
    echo "slurmdbd $pid" >> "$PIDFILE"
    for _ in $(seq 1 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.1; done
    sacctmgr -n list cluster >/dev/null || die "slurmdbd does not answer (see $LOG_DIR/slurmdbd.log)"
fi

# ---------------------------------------------------------------- daemons ---
# Both daemonize (fork + setsid), re-parent to PID 1 and write their pid file.
/usr/sbin/slurmctld -i || die "slurmctld failed to start (see $LOG_DIR/slurmctld.log)"
pid=$(wait_pidfile slurmctld "$RUN_DIR/slurmctld.pid") \
    || { tail -n 30 "$LOG_DIR/slurmctld.log" >&2; die "slurmctld did not come up"; }
echo "slurmctld $pid" >> "$PIDFILE"
/usr/sbin/slurmd || die "slurmd failed to start (see $LOG_DIR/slurmd.log)"
pid=$(wait_pidfile slurmd "$RUN_DIR/slurmd.pid") \
    || { tail -n 30 "$LOG_DIR/slurmd.log" >&2; die "slurmd did not come up"; }
echo "slurmd $pid" >> "$PIDFILE"

# ------------------------------------------------------- wait until idle ---
deadline=$(( $(date +%s) + WAIT_S ))
st=""
while [ "$(date +%s)" -lt "$deadline" ]; do
    st=$(node_state)
    case "$st" in idle|mix|alloc) break ;; esac
    sleep 0.2
done
case "$st" in
    idle|mix|alloc) ;;
    *)
        sinfo -N -l >&2 || true
        scontrol show node "$NODE" >&2 || true
        tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
        die "node $NODE is '$st', not idle, after ${WAIT_S}s"
        ;;
esac

ms=$(ms_since "$T_START")
log "node $NODE is $st, $((ms / 1000)).$(printf %03d $((ms % 1000)))s after start; pids in $PIDFILE:"
cat "$PIDFILE"
