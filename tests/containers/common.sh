# Sourced by compose_test.sh and systemd_test.sh: the time of each step, and waiting with a deadline.
t0=$(date +%s%N)
since() { local d=$(( ($(date +%s%N) - $1) / 100000000 )); printf '%d.%d' $((d / 10)) $((d % 10)); }  # seconds since $1 (ns)
lap() { printf '%-58s %6s s\n' "$1" "$(since "$t0")"; }
wait_for() {  # wait_for SECONDS CMD...: until CMD succeeds, or return 1 after SECONDS
  local limit=$1; shift; local end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -lt $end ] || return 1; sleep 0.5; done
}
