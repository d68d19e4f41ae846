#!/usr/bin/env bash
# The images and compose.yaml end to end (make test-containers; not part of make test):
# build, up, health, the example job uploaded and its zip downloaded, the executor container killed
# and a job still completing after its restart, down, nothing left. Prints the time of each step.
# Needs podman + podman-compose (COMPOSE=... to use another, e.g. "docker compose").
# PRODIGY=1 also builds and starts the `prodigy` profile and runs PRODIGY on /work/shared/data/2oob.pdb
# (PDB=... for another complex).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PROJECT=${PROJECT:-orchtest$$}
COMPOSE=${COMPOSE:-podman-compose}
export BUILDAH_FORMAT=docker            # keep HEALTHCHECK in podman-built images
export SERVER_PORT=${SERVER_PORT:-15000} EXECUTOR_PORT=${EXECUTOR_PORT:-19000}
S=http://127.0.0.1:$SERVER_PORT
ENVFILE_MADE=0
if [ ! -e .env ]; then
  printf 'CLUSTER_SECRET=%s\n' "$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')" > .env; ENVFILE_MADE=1
fi
PRODIGY=${PRODIGY:-0}
PDB=${PDB:-/work/shared/data/2oob.pdb}
NODES="server executor"; PROFILE=()
[ "$PRODIGY" = 1 ] && { NODES="$NODES prodigy"; PROFILE=(--profile prodigy); }
c() { $COMPOSE -p "$PROJECT" -f compose.yaml "${PROFILE[@]}" "$@"; }
t0=$(date +%s.%N); lap() { printf '%-40s %6.1f s\n' "$1" "$(echo "$(date +%s.%N) - $t0" | bc)"; }
cleanup() {
  c down -v -t 20 >/dev/null 2>&1 || true
  [ $ENVFILE_MADE = 1 ] && rm -f "$ROOT/.env"
  true
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; c logs --tail 40 >&2 2>&1 || true; exit 1; }

wait_for() {  # wait_for SECONDS CMD...: until CMD succeeds
  local limit=$1; shift; local end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -lt $end ] || return 1; sleep 0.5; done
}
executor_alive() {  # the server's operator view, opened by the cluster secret
  curl -fsS -H "Authorization: Bearer $(sed -n 's/^CLUSTER_SECRET=//p' .env)" "$S/executors" | grep -q '"state": *"alive"'
}
upload() {
  curl -fsS -X POST "$S/upload" -F "file=@example/run.sh" -F "file=@example/input.pdb" -F "user_id=1" \
    -F "service=example" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
completed() { [ "$(curl -s -o /dev/null -w '%{http_code}' -I "$S/download/$1")" = 200 ]; }

c build >/tmp/$PROJECT-build.log 2>&1 || { tail -30 /tmp/$PROJECT-build.log; fail "build"; }
lap "build"
c up -d >/tmp/$PROJECT-up.log 2>&1 || { tail -30 /tmp/$PROJECT-up.log; fail "up"; }
lap "up -d"
wait_for 60 curl -fsS "$S/health" || fail "server /health"
lap "server healthy"
wait_for 60 podman healthcheck run "${PROJECT}_server_1" || fail "server HEALTHCHECK"
for n in $NODES; do [ $n = server ] || wait_for 60 podman healthcheck run "${PROJECT}_${n}_1" || fail "$n HEALTHCHECK"; done
lap "HEALTHCHECKs pass (podman healthcheck run)"
wait_for 60 executor_alive || fail "executor not alive at the server"
lap "executor registered, alive"

id=$(upload) || fail "upload"
wait_for 60 completed "$id" || fail "job $id did not complete: $(curl -s "$S/jobs/$id")"
curl -fsS -o "/tmp/$PROJECT.zip" "$S/download/$id"
python3 - "/tmp/$PROJECT.zip" <<'PY' || fail "zip content"
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1]); out = z.read("output.txt").decode()
assert "Computation complete!" in out and "input.pdb" in out, out
print("  output.txt:", out.splitlines()[-2])
PY
rm -f "/tmp/$PROJECT.zip"
lap "job $id completed, zip checked"

# A job running when its executor's container is killed: it completes after the container restarts.
printf '#!/usr/bin/env bash\nsleep 4\necho slept > output.txt\n' > "/tmp/$PROJECT-run.sh"
id2=$(curl -fsS -X POST "$S/upload" -F "file=@/tmp/$PROJECT-run.sh;filename=run.sh" -F "user_id=2" -F "service=example" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') || fail "upload of the sleeping job"
rm -f "/tmp/$PROJECT-run.sh"
running() { curl -fsS "$S/jobs/$1" | grep -q '"status": *"Running"'; }
wait_for 30 running "$id2" || fail "job $id2 never ran: $(curl -s "$S/jobs/$id2")"
podman kill "${PROJECT}_executor_1" >/dev/null
sleep 1
podman start "${PROJECT}_executor_1" >/dev/null 2>&1 || true  # in case its restart policy has not already
wait_for 120 completed "$id2" || fail "job $id2 did not complete after the restart: $(curl -s "$S/jobs/$id2")"
echo "  job $id2: $(curl -fsS "$S/jobs/$id2" | python3 -c 'import json,sys; j=json.load(sys.stdin); print("status", j["status"], "attempts", j["attempts"])')"
lap "executor killed+restarted, job $id2 completed"

if [ "$PRODIGY" = 1 ]; then
  pid=$(curl -fsS -X POST "$S/upload" -F "file=@example/prodigy/run.sh" -F "file=@$PDB" -F "user_id=1" \
    -F "service=prodigy" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') || fail "prodigy upload"
  wait_for 180 completed "$pid" || fail "prodigy job $pid did not complete: $(curl -s "$S/jobs/$pid")"
  curl -fsS -o "/tmp/$PROJECT.zip" "$S/download/$pid"
  python3 - "/tmp/$PROJECT.zip" <<'PY' || fail "prodigy.out"
import sys, zipfile
out = zipfile.ZipFile(sys.argv[1]).read("prodigy.out").decode()
line = [l for l in out.splitlines() if "Predicted binding affinity" in l]
assert line, out
print("  prodigy.out:", line[0].strip())
PY
  rm -f "/tmp/$PROJECT.zip"
  lap "prodigy job $pid completed"
fi

# SIGTERM to an executor with a job running: it drains (the job finishes and is reported), exits 0.
printf '#!/usr/bin/env bash\nsleep 3\necho done > output.txt\n' > "/tmp/$PROJECT-run.sh"
id3=$(curl -fsS -X POST "$S/upload" -F "file=@/tmp/$PROJECT-run.sh;filename=run.sh" -F "user_id=3" -F "service=example" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') || fail "upload of the draining job"
rm -f "/tmp/$PROJECT-run.sh"
wait_for 30 running "$id3" || fail "job $id3 never ran"
podman stop -t 30 "${PROJECT}_executor_1" >/dev/null 2>&1
[ "$(podman inspect -f '{{.State.ExitCode}}' "${PROJECT}_executor_1")" = 0 ] || fail "executor exit code on SIGTERM"
wait_for 10 completed "$id3" || fail "job $id3 not completed by the drain: $(curl -s "$S/jobs/$id3")"
lap "SIGTERM drained the executor: job $id3 completed"

# SIGTERM: the nodes stop cleanly (exit code 0) within the grace period
c stop -t 30 >/dev/null 2>&1
for n in $NODES; do
  code=$(podman inspect -f '{{.State.ExitCode}}' "${PROJECT}_${n}_1")
  [ "$code" = 0 ] || fail "$n exited with $code on SIGTERM"
done
lap "SIGTERM: every node exited 0"
c down -v -t 20 >/dev/null 2>&1
left="$(podman ps -a --format '{{.Names}}' | grep "^${PROJECT}_" || true)$(podman volume ls --format '{{.Name}}' | grep "^${PROJECT}_" || true)$(podman network ls --format '{{.Name}}' | grep "^${PROJECT}_" || true)$(podman pod ls --format '{{.Name}}' | grep "${PROJECT}" || true)"
[ -z "$left" ] || fail "left behind: $left"
lap "down: nothing left"
echo "PASS"
