#!/usr/bin/env bash
# The image and compose.yaml end to end, with podman and podman-compose (`make test-containers`; CI
# runs it after `make test`): build, up, health, the README's curl session (upload, status, the zip),
# the image's user and build tools, an executor container crashing while its job runs (restarted, the
# job completes), SIGTERM draining an executor, SIGTERM stopping every node with exit code 0,
# down, and nothing left behind. Prints the time of each step; any failed check ends it with FAIL and
# the containers' logs.
# PRODIGY=1 also builds the prodigy target, starts the `prodigy` profile and runs PRODIGY on 2oob.pdb
# (PDB=... for another complex). COMPOSE=... names another podman-compose (the checks call podman
# itself and use podman-compose's container names: not for docker compose).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PROJECT=${PROJECT:-orchtest$$}
COMPOSE=${COMPOSE:-$ROOT/.venv/bin/podman-compose}
export BUILDAH_FORMAT=docker            # podman's OCI format would drop the image's HEALTHCHECK
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export SERVER_PORT=${SERVER_PORT:-$(free_port)} EXECUTOR_PORT=${EXECUTOR_PORT:-$(free_port)}
S=http://127.0.0.1:$SERVER_PORT
ENVFILE=$(mktemp /tmp/$PROJECT-env.XXXXXX)
SECRET=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
printf 'CLUSTER_SECRET=%s\n' "$SECRET" > "$ENVFILE"   # as the README's .env, but not the user's own
PRODIGY=${PRODIGY:-0}
PDB=${PDB:-$ROOT/../shared/data/2oob.pdb}
NODES="server executor"; PROFILE=()
[ "$PRODIGY" = 1 ] && { NODES="$NODES prodigy"; PROFILE=(--profile prodigy); }
c() { $COMPOSE --env-file "$ENVFILE" -p "$PROJECT" -f compose.yaml "${PROFILE[@]}" "$@"; }
. tests/containers/common.sh
cleanup() { c down -v -t 20 >/dev/null 2>&1 || true; rm -rf "$ENVFILE" "/tmp/$PROJECT".*; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; c logs --tail 40 >&2 2>&1 || true; exit 1; }

executor_alive() {  # executor_alive HOST:PORT: the server's operator view (opened by the cluster secret) says so
  curl -m 10 -fsS -H "Authorization: Bearer $SECRET" "$S/executors" | python3 -c '
import json, sys
listed = json.load(sys.stdin)
listed = listed.get("executors", listed) if isinstance(listed, dict) else listed
sys.exit(0 if any(e["url"] == "http://" + sys.argv[1] and e["state"] == "alive" for e in listed) else 1)' "$1"
}
submit() {  # submit USER SERVICE FILE...: prints the new job's id
  local user=$1 service=$2; shift 2; local files=()
  for f in "$@"; do files+=(-F "file=@$f"); done
  curl -m 30 -fsS -X POST "$S/upload" "${files[@]}" -F "user_id=$user" -F "service=$service" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
status() { curl -m 10 -fsS "$S/jobs/$1" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["status"], j["attempts"])'; }
has_status() { [ "$(status "$1" | cut -d' ' -f1)" = "$2" ]; }
container() { echo "${PROJECT}_$1_1"; }
running() { [ "$(podman inspect -f '{{.State.Running}}' "$(container "$1")")" = true ]; }
restarted() { [ "$(podman inspect -f '{{.RestartCount}}' "$(container "$1")")" -ge 1 ] && running "$1"; }
sleeper() {  # a run.sh that sleeps $1 seconds, then writes output.txt
  printf '#!/usr/bin/env bash\nsleep %s\necho slept > output.txt\n' "$1" > "/tmp/$PROJECT.run.sh"
  mkdir -p "/tmp/$PROJECT.sleeper"; cp "/tmp/$PROJECT.run.sh" "/tmp/$PROJECT.sleeper/run.sh"
  echo "/tmp/$PROJECT.sleeper/run.sh"
}

# The README's command, detached: `up --build`.
c up --build -d >"/tmp/$PROJECT.up.log" 2>&1 || { tail -30 "/tmp/$PROJECT.up.log"; fail "up --build"; }
lap "up --build -d"
wait_for 60 curl -m 5 -fsS "$S/health" || fail "server /health"
lap "server /health answers"
for n in $NODES; do wait_for 60 podman healthcheck run "$(container $n)" || fail "$n HEALTHCHECK"; done
lap "HEALTHCHECK of each node passes"
wait_for 60 executor_alive executor:9000 || fail "the executor is not alive at the server as http://executor:9000"
[ "$PRODIGY" = 1 ] && { wait_for 60 executor_alive prodigy:9001 || fail "the prodigy executor is not alive"; }
lap "executors registered by service name, alive"
for n in $NODES; do
  [ "$(podman exec "$(container $n)" id -u)" = 10001 ] || fail "$n does not run as the orchestrator user (uid 10001)"
  found=$(podman exec "$(container $n)" sh -c 'for t in gcc cc g++ make; do command -v $t; done' || true)
  [ -z "$found" ] || fail "build tools left in the $n image: $found"
done
podman logs "$(container executor)" 2>&1 | grep "bubblewrap sandbox" >/dev/null || fail "the executor's jobs are not sandboxed"
lap "non-root, no build tools, jobs in bubblewrap"

# The README's session: upload the example, follow its status, download its zip.
id=$(submit 1 example example/run.sh example/input.pdb) || fail "upload"
wait_for 60 has_status "$id" Completed || fail "job $id did not complete: $(curl -s "$S/jobs/$id")"
curl -fsS -o "/tmp/$PROJECT.zip" "$S/download/$id" || fail "download of job $id"
python3 - "/tmp/$PROJECT.zip" <<'PY' || fail "the zip of job $id"
import sys, zipfile
output = zipfile.ZipFile(sys.argv[1]).read("output.txt").decode()
assert "Computation complete!" in output and "input.pdb" in output, output
print("  output.txt:", output.splitlines()[-2])
PY
lap "job $id completed, zip downloaded and checked"

# An executor container that dies (its PID 1 SIGKILLed from the host: a crash, not `podman kill`, which
# counts as a stop by the user) while its job runs: compose's restart policy starts it again, and the
# job completes there on its second attempt.
id2=$(submit 2 example "$(sleeper 4)") || fail "upload of a sleeping job"
wait_for 30 has_status "$id2" Running || fail "job $id2 never ran: $(curl -s "$S/jobs/$id2")"
kill -KILL "$(podman inspect -f '{{.State.Pid}}' "$(container executor)")"
wait_for 60 restarted executor || fail "restart: unless-stopped did not start the executor's container again"
wait_for 120 has_status "$id2" Completed || fail "job $id2 did not complete after the restart: $(curl -s "$S/jobs/$id2")"
[ "$(status "$id2")" = "Completed 2" ] || fail "job $id2: $(status "$id2"), not completed on attempt 2"
lap "executor crashed, restarted: job $id2 completed on attempt 2"

if [ "$PRODIGY" = 1 ]; then
  if [ -f "$PDB" ]; then
    pid=$(submit 1 prodigy example/prodigy/run.sh "$PDB") || fail "prodigy upload"
    wait_for 180 has_status "$pid" Completed || fail "prodigy job $pid did not complete: $(curl -s "$S/jobs/$pid")"
    curl -fsS -o "/tmp/$PROJECT.zip" "$S/download/$pid" || fail "download of job $pid"
    python3 - "/tmp/$PROJECT.zip" <<'PY' || fail "prodigy.out"
import sys, zipfile
out = zipfile.ZipFile(sys.argv[1]).read("prodigy.out").decode()
line = [l for l in out.splitlines() if "Predicted binding affinity" in l]
assert line and line[0].split()[-1] == "-6.2", out  # as tests/test_prodigy.py: 2oob's ΔG
print("  prodigy.out:", line[0].strip())
PY
    lap "prodigy job $pid completed"
  else
    [ "${CI:-}" != true ] || fail "no $PDB for the PRODIGY job (PDB=... names a complex)"
    echo "  SKIPPED the PRODIGY job: $PDB is not here (PDB=... names a complex)"
  fi
fi

# SIGTERM to an executor with a job running: it drains (the job finishes and is reported), exits 0.
id3=$(submit 3 example "$(sleeper 3)") || fail "upload of the draining job"
wait_for 30 has_status "$id3" Running || fail "job $id3 never ran"
podman stop -t 30 "$(container executor)" >/dev/null 2>&1 || fail "podman stop of the executor"
[ "$(podman inspect -f '{{.State.ExitCode}}' "$(container executor)")" = 0 ] || fail "executor exit code on SIGTERM"
wait_for 10 has_status "$id3" Completed || fail "job $id3 not completed by the drain: $(curl -s "$S/jobs/$id3")"
[ "$(status "$id3")" = "Completed 1" ] || fail "job $id3 ran again: $(status "$id3")"
lap "SIGTERM drained the executor: job $id3 completed"

# docs/deploy.md's backup of a running server's database (the image has Python's sqlite3, no sqlite3 command).
podman exec "$(container server)" python3 -c "import sqlite3; sqlite3.connect('/data/server/orchestrator.sqlite').backup(sqlite3.connect('/data/server/backup.sqlite'))" \
  || fail "the online backup"
podman cp "$(container server):/data/server/backup.sqlite" "/tmp/$PROJECT.sqlite" || fail "podman cp of the backup"
python3 - "/tmp/$PROJECT.sqlite" "$id3" <<'PY' || fail "the backup's content"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
tables = {name.lower(): name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
jobs = db.execute(f"SELECT count(*) FROM {tables['job']}").fetchone()[0]
assert jobs >= int(sys.argv[2]) > 0, jobs
print(f"  backup: integrity ok, {jobs} jobs")
PY
lap "online backup of the database, copied out and checked"

c stop -t 30 >/dev/null 2>&1 || fail "compose stop"
for n in $NODES; do
  code=$(podman inspect -f '{{.State.ExitCode}}' "$(container $n)")
  [ "$code" = 0 ] || fail "$n exited with $code on SIGTERM"
done
lap "SIGTERM: every node exited 0"
c down -v -t 20 >/dev/null 2>&1
left="$(podman ps -a --format '{{.Names}}' | grep "^${PROJECT}_" || true)$(podman volume ls --format '{{.Name}}' | grep "^${PROJECT}_" || true)$(podman network ls --format '{{.Name}}' | grep "^${PROJECT}_" || true)$(podman pod ls --format '{{.Name}}' | grep "${PROJECT}" || true)"
[ -z "$left" ] || fail "left behind: $left"
lap "down: no container, volume, network or pod left"
echo "PASS"
