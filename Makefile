# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-containers test-systemd podman-ready test-fast bench bench-quick prodigy prodigy-executor packages test-packages clean status-screenshot

$(STAMP): requirements.txt requirements-test.txt requirements-nodeps.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-test.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps -e .  # the `orchestrator` command (.venv/bin/orchestrator)
	touch $(STAMP)

# Debian packages: bubblewrap (each job's sandbox); for the tests also tmux (a terminal to close) and
# chromium (the status page in a real browser).
# Installed when missing and this user may (root with apt-get); otherwise say what is missing.
define install_missing
	@missing=""; for pair in $(1); do command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "note: please install$$missing (e.g. sudo apt-get install$$missing)"; fi; \
	fi
endef

packages:
	$(call install_missing,bwrap:bubblewrap)

test-packages:
	$(call install_missing,bwrap:bubblewrap tmux:tmux chromium:chromium)

# The server on :5000 and one `example` executor on :9000, both on loopback; Ctrl-C stops both.
# (The tests run this target with other arguments: SERVER_ARGS, CLIENT_ARGS.)
SERVER_ARGS := --config conf/server.ini
CLIENT_ARGS := --service example --config conf/client.ini
run: $(STAMP) packages
	@trap 'kill -TERM $$client 2>/dev/null; wait $$client' EXIT INT TERM; \
	$(PY) run_client.py $(CLIENT_ARGS) & client=$$!; \
	$(PY) run_server.py $(SERVER_ARGS)

test: $(STAMP) prodigy test-packages
	$(PY) -m pytest -q -n 2 tests

# The inner loop: every test that starts no process and takes no seconds (under 30 s).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not processes and not slow" tests

# Benchmarks against real nodes on loopback (docs/performance.md); quick: a smoke run, no figures.
# `bench` alone installs requirements-bench.txt (matplotlib, for the chart of docs/scheduling.md).
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): requirements-bench.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m bench.all

bench-quick: $(STAMP)
	$(PY) -m bench.all --quick

# The README's picture of the status page, taken by the real-browser test of it.
status-screenshot: $(STAMP) test-packages
	STATUS_SCREENSHOT=$(CURDIR)/docs/images/status.png $(PY) -m pytest -q tests/test_status_page.py

# The original's real workload: PRODIGY in a venv of its own (needs gcc for freesasa).
PRODIGY_VENV := $(VENV)-prodigy
prodigy: $(PRODIGY_VENV)/bin/prodigy
$(PRODIGY_VENV)/bin/prodigy:
	$(PYTHON) -m venv $(PRODIGY_VENV)
	$(PRODIGY_VENV)/bin/pip install --quiet prodigy-prot==2.4.0

# An executor for the `prodigy` service on :9001 (the port conf/server.ini names for it).
prodigy-executor: $(STAMP) prodigy packages
	PRODIGY_BIN=$(CURDIR)/$(PRODIGY_VENV)/bin/prodigy $(PY) run_client.py --service prodigy --port 9001

clean:
	rm -rf var .pytest_cache

# Containers, for real, with podman (CI runs both after `make test`; neither is part of it). As root,
# podman is set up first (tests/containers/setup-podman.sh: packages, a local Debian base image).
podman-ready:
	@if [ "$$(id -u)" = 0 ]; then bash tests/containers/setup-podman.sh; \
	 else command -v podman >/dev/null || { echo "podman is missing: run tests/containers/setup-podman.sh as root"; exit 2; }; fi

# The image and compose.yaml end to end with podman-compose: build, up, health, the example job, an
# executor killed and restarted, SIGTERM, a backup, down, nothing left (docs/deploy.md, What tests it).
# `make test-containers PRODIGY=1` adds the prodigy image and a PRODIGY job on 2oob.pdb.
PRODIGY ?= 0
test-containers: $(STAMP) podman-ready
	PRODIGY=$(PRODIGY) bash tests/containers/compose_test.sh

# The systemd units under a real systemd (PID 1 of a podman container), installed as docs/deploy.md says.
test-systemd: podman-ready
	bash tests/containers/systemd_test.sh
