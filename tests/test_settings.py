"""conf.settings: defaults, the INI loader, the original's environment overrides, and validation."""
from __future__ import annotations

from pathlib import Path

import pytest

from conf.settings import (DEFAULT_MAX_UPLOAD_MB, DEFAULT_RETENTION_HOURS, DEFAULT_RUNS_PER_USER, ClientConfig,
                           ConfigError, ServerConfig, ServiceConfig, load_client_config, load_server_config)

ROOT = Path(__file__).resolve().parent.parent


def ini(tmp_path: Path, text: str, name: str = "config.ini") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def server_ini(tmp_path: Path, server: str = "", service: str = "[service.example]\nclients = http://h:1\n") -> str:
    return ini(tmp_path, f"[server]\n{server}\n{service}")


# --- server: defaults and a full file -----------------------------------------------------------

def test_a_server_file_with_only_a_service_section_gets_every_server_default(tmp_path):
    config = load_server_config(ini(tmp_path, "[service.example]\nclients = http://h:1\n"), environ={})

    assert config == ServerConfig(services=(ServiceConfig(name="example", clients=("http://h:1",)),))
    assert config.host == "127.0.0.1" and config.port == 5000 and config.data_dir == "var/server"
    assert config.database_url == str(Path("var/server") / "orchestrator.sqlite")
    assert config.retention_hours == DEFAULT_RETENTION_HOURS
    assert config.max_upload_mb == DEFAULT_MAX_UPLOAD_MB and config.threads == 8
    assert config.own_url == "http://127.0.0.1:5000"
    service = config.service("example")
    assert service.runs_per_user == DEFAULT_RUNS_PER_USER and service.max_runs is None
    assert service.retention_hours is None


def test_a_service_may_list_no_executors_and_wait_for_them_to_register(tmp_path):
    config = load_server_config(ini(tmp_path, "[service.example]\nruns_per_user = 2\n"), environ={})
    assert config.service("example").clients == ()


def test_a_server_with_no_service_at_all_is_refused():
    with pytest.raises(ConfigError, match="no service is configured"):
        load_server_config(None, environ={})


def test_a_full_server_file_is_read_key_by_key(tmp_path):
    path = ini(tmp_path, """
[server]
host = 0.0.0.0
allow_anonymous = true
cluster_secret = 0123456789abcdef0123
port = 8123
data_dir = /srv/orchestrator
database = /srv/db.sqlite
retention_hours = 1.5   # inline comments are allowed
actor_admin_port = 8124
callback_url = https://example.org:8443/base/
max_upload_mb = 12
threads = 3

[service.zeta]
clients = http://10.0.0.1:9000, https://exec.example.org:9443/
runs_per_user = 2
max_runs = 7
retention_hours = 0.25

[service.alpha-1]
clients = http://127.0.0.1:9001
""")
    config = load_server_config(path, environ={})

    assert (config.host, config.port, config.data_dir, config.database) == (
        "0.0.0.0", 8123, "/srv/orchestrator", "/srv/db.sqlite")
    assert config.database_url == "/srv/db.sqlite"
    assert config.retention_hours == 1.5
    assert config.actor_admin_port == 8124
    assert config.callback_url == "https://example.org:8443/base"
    assert config.own_url == "https://example.org:8443/base"
    assert config.max_upload_mb == 12 and config.threads == 3
    assert config.allow_anonymous and config.cluster_secret == "0123456789abcdef0123"
    # Services are sorted by name.
    assert [s.name for s in config.services] == ["alpha-1", "zeta"]
    assert config.service("zeta") == ServiceConfig(
        name="zeta", clients=("http://10.0.0.1:9000", "https://exec.example.org:9443"),
        runs_per_user=2, max_runs=7, retention_hours=0.25)
    assert config.service("alpha-1") == ServiceConfig(name="alpha-1", clients=("http://127.0.0.1:9001",))
    assert config.service("missing") is None


def test_the_shipped_server_and_client_files_load():
    server = load_server_config(str(ROOT / "conf" / "server.ini"), environ={})
    client = load_client_config(str(ROOT / "conf" / "client.ini"), environ={})

    assert [s.name for s in server.services] == ["example", "prodigy"]
    assert server.service("prodigy").runs_per_user == 2
    assert client.server_url == "http://127.0.0.1:5000" and client.slots == 4 and client.tier == 1


def test_own_url_brackets_an_ipv6_host_and_maps_the_wildcard_to_loopback():
    assert ServerConfig(host="::1", port=80).own_url == "http://[::1]:80"
    assert ServerConfig(host="::", port=81).own_url == "http://127.0.0.1:81"


def test_a_missing_configuration_file_is_reported_by_its_path(tmp_path):
    missing = tmp_path / "nope.ini"
    with pytest.raises(ConfigError, match="nope.ini does not exist"):
        load_server_config(str(missing), environ={})


def test_an_unparsable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot be parsed"):
        load_server_config(ini(tmp_path, "port = 5000\n"), environ={})


# --- server: each bad value names its key -------------------------------------------------------

@pytest.mark.parametrize("server, service, key", [
    ("port = http", "[service.example]\n", "[server] port"),
    ("port = 50.5", "[service.example]\n", "[server] port"),
    ("port = 0", "[service.example]\n", "[server] port"),
    ("port = 65536", "[service.example]\n", "[server] port"),
    ("retention_hours = -1", "[service.example]\n", "[server] retention_hours"),
    ("retention_hours = 0", "[service.example]\n", "[server] retention_hours"),
    ("retention_hours = nan", "[service.example]\n", "[server] retention_hours"),
    ("retention_hours = inf", "[service.example]\n", "[server] retention_hours"),
    ("retention_hours = two days", "[service.example]\n", "[server] retention_hours"),
    ("actor_admin_port = -1", "[service.example]\n", "[server] actor_admin_port"),
    ("callback_url = ftp://host:1", "[service.example]\n", "[server] callback_url"),
    ("max_upload_mb = 0", "[service.example]\n", "[server] max_upload_mb"),
    ("threads = 0", "[service.example]\n", "[server] threads"),
    ("connection_limit = 10", "[service.example]\n", "[server] connection_limit"),
    ("client_timeout = 0", "[service.example]\n", "[server] client_timeout"),
    ("max_connections_per_client = 2000", "[service.example]\n", "[server] max_connections_per_client"),
    ("", "[service.example]\nruns_per_user = 0\n", "[service.example] runs_per_user"),
    ("", "[service.example]\nruns_per_user = many\n", "[service.example] runs_per_user"),
    ("", "[service.example]\nmax_runs = 0\n", "[service.example] max_runs"),
    ("", "[service.example]\nretention_hours = -0.5\n", "[service.example] retention_hours"),
    ("", "[service.example]\nretention_hours = NaN\n", "[service.example] retention_hours"),
    ("", "[service.example]\nclients = 127.0.0.1:9000\n", "[service.example] clients"),
    ("", "[service.example]\nclients = http://host:99999\n", "[service.example] clients"),
])
def test_each_bad_server_value_is_a_config_error_naming_its_key(tmp_path, server, service, key):
    with pytest.raises(ConfigError) as raised:
        load_server_config(server_ini(tmp_path, server, service), environ={})
    assert key in str(raised.value)


def test_an_unknown_server_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"\[server\] has unknown key 'prot'"):
        load_server_config(server_ini(tmp_path, "prot = 5000"), environ={})


def test_an_unknown_service_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"\[service.example\] has unknown key 'max_run'"):
        load_server_config(server_ini(tmp_path, "", "[service.example]\nmax_run = 3\n"), environ={})


def test_an_unknown_section_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"section \[services.example\] is not known"):
        load_server_config(server_ini(tmp_path, "", "[services.example]\n"), environ={})


@pytest.mark.parametrize("section", ["service.Example", "service.", "service.9lives", "service.a b",
                                     "service." + "x" * 64])
def test_an_invalid_service_name_in_a_section_is_named(tmp_path, section):
    with pytest.raises(ConfigError) as raised:
        load_server_config(server_ini(tmp_path, "", f"[{section}]\n"), environ={})
    assert f"[{section}] has an invalid service name" in str(raised.value)


def test_the_actor_admin_port_must_differ_from_the_http_port(tmp_path):
    with pytest.raises(ConfigError, match="actor_admin_port must differ"):
        load_server_config(server_ini(tmp_path, "port = 7000\nactor_admin_port = 7000"), environ={})


# --- server: the original's environment ----------------------------------------------------------

def test_service_runs_per_user_and_max_runs_come_from_the_environment(tmp_path):
    path = server_ini(tmp_path, "", "[service.example]\nclients = http://h:1\nruns_per_user = 4\nmax_runs = 9\n")
    config = load_server_config(path, environ={"SERVICE_EXAMPLE_RUNS_PER_USER": "1",
                                               "SERVICE_EXAMPLE_MAX_RUNS": "3"})
    assert config.service("example").runs_per_user == 1
    assert config.service("example").max_runs == 3


def test_an_upload_url_adds_its_scheme_host_and_port_as_an_executor_and_creates_the_service():
    config = load_server_config(None, environ={
        "SERVICE_PRODIGY_UPLOAD_URL": "http://10.1.2.3:9001/upload?x=1",
        "SERVICE_PRODIGY_DOWNLOAD_URL": "http://10.1.2.3:9001/download",
    })
    assert config.services == (ServiceConfig(name="prodigy", clients=("http://10.1.2.3:9001",)),)


def test_an_upload_url_is_added_to_the_files_clients_once(tmp_path):
    path = server_ini(tmp_path, "", "[service.example]\nclients = http://a:1\n")
    config = load_server_config(path, environ={"SERVICE_EXAMPLE_UPLOAD_URL": "http://b:2/upload"})
    assert config.service("example").clients == ("http://a:1", "http://b:2")

    config = load_server_config(path, environ={"SERVICE_EXAMPLE_UPLOAD_URL": "http://a:1/upload"})
    assert config.service("example").clients == ("http://a:1",)


def test_a_service_name_with_underscores_is_read_from_the_environment_whole():
    config = load_server_config(None, environ={"SERVICE_MY_TOOL_RUNS_PER_USER": "3",
                                               "SERVICE_MY_TOOL_MAX_RUNS": "6",
                                               "SERVICE_MY_TOOL_UPLOAD_URL": "http://h:1"})
    assert config.services == (ServiceConfig(name="my_tool", clients=("http://h:1",), runs_per_user=3,
                                             max_runs=6),)


@pytest.mark.parametrize("key, value", [
    ("SERVICE_EXAMPLE_RUNS_PER_USER", "0"),
    ("SERVICE_EXAMPLE_RUNS_PER_USER", "x"),
    ("SERVICE_EXAMPLE_MAX_RUNS", "-2"),
    ("SERVICE_EXAMPLE_UPLOAD_URL", "not a url"),
    ("SERVICE_9X_MAX_RUNS", "2"),
    ("MAX_AGE", "0"),
    ("MAX_AGE", "3.5"),
])
def test_a_bad_environment_value_is_a_config_error_naming_the_variable(tmp_path, key, value):
    with pytest.raises(ConfigError) as raised:
        load_server_config(server_ini(tmp_path), environ={key: value})
    assert key in str(raised.value)


def test_data_path_db_path_and_max_age_override_the_file(tmp_path):
    path = server_ini(tmp_path, "data_dir = from-file\ndatabase = file.sqlite\nretention_hours = 5")
    config = load_server_config(path, environ={"DATA_PATH": "/data", "DB_PATH": "/db/jobs.sqlite",
                                               "MAX_AGE": "5400"})
    assert config.data_dir == "/data"
    assert config.database == config.database_url == "/db/jobs.sqlite"
    assert config.retention_hours == 1.5
    assert config.retention_seconds("example") == 5400.0


def test_data_path_alone_moves_the_default_database_with_it(tmp_path):
    config = load_server_config(server_ini(tmp_path), environ={"DATA_PATH": "/data"})
    assert config.database_url == str(Path("/data") / "orchestrator.sqlite")


def test_unrelated_environment_variables_are_ignored(tmp_path):
    environ = {"SERVICE_URL": "x", "SERVICE_EXAMPLE_COLOUR": "blue", "PORT": "1", "HOME": "/root"}
    assert load_server_config(server_ini(tmp_path), environ=environ) == load_server_config(
        server_ini(tmp_path), environ={})


def test_a_service_retention_overrides_the_servers(tmp_path):
    path = ini(tmp_path, "[server]\nretention_hours = 2\n[service.fast]\nclients = http://h:1\nretention_hours = 0.5\n"
                         "[service.slow]\nclients = http://h:2\n")
    config = load_server_config(path, environ={})
    assert config.retention_seconds("fast") == 1800.0
    assert config.retention_seconds("slow") == 7200.0
    assert config.retention_seconds("unknown") == 7200.0

    aged = load_server_config(path, environ={"MAX_AGE": "60"})
    assert aged.retention_seconds("fast") == 1800.0
    assert aged.retention_seconds("slow") == 60.0


def test_the_port_option_overrides_the_file(tmp_path):
    config = load_server_config(server_ini(tmp_path, "port = 7000"), environ={}, port=7100)
    assert config.port == 7100 and config.own_url == "http://127.0.0.1:7100"
    with pytest.raises(ConfigError, match="--port"):
        load_server_config(server_ini(tmp_path), environ={}, port=70000)


def test_a_port_option_equal_to_the_actor_admin_port_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="actor_admin_port must differ"):
        load_server_config(server_ini(tmp_path, "actor_admin_port = 7001"), environ={}, port=7001)


# --- client ------------------------------------------------------------------------------------

def test_a_client_without_a_file_gets_every_default():
    config = load_client_config(None, environ={})
    assert config == ClientConfig()
    assert config.data_path == "var/executor-example-9000"
    assert config.database_url == str(Path("var/executor-example-9000") / "executor.sqlite")


def test_a_full_client_file_is_read_key_by_key(tmp_path):
    path = ini(tmp_path, """
[client]
service = Prodigy
host = 0.0.0.0
port = 9100
data_dir = /nodes/{service}/{port}
slots = 2
server_url = http://server:5000/
actor_admin_port = 9101
retention_hours = 3
max_upload_mb = 5
threads = 4
advertise_url = http://node7:9100/
cluster_secret = 0123456789abcdef0123
tier = 2
""")
    config = load_client_config(path, environ={})
    assert config == ClientConfig(service="prodigy", host="0.0.0.0", port=9100, data_dir="/nodes/{service}/{port}",
                                  slots=2, server_url="http://server:5000", actor_admin_port=9101,
                                  retention_hours=3.0, max_upload_mb=5, threads=4,
                                  advertise_url="http://node7:9100", cluster_secret="0123456789abcdef0123", tier=2)
    assert config.own_url == "http://node7:9100"
    assert config.data_path == "/nodes/prodigy/9100"


def test_the_command_line_service_and_port_override_the_client_file(tmp_path):
    path = ini(tmp_path, "[client]\nservice = example\nport = 9000\n")
    config = load_client_config(path, environ={"DATA_PATH": "/x/{service}-{port}"}, service="other", port=9200)
    assert (config.service, config.port, config.data_path) == ("other", 9200, "/x/other-9200")


def test_the_tier_option_overrides_the_client_file_and_is_checked_like_it(tmp_path):
    path = ini(tmp_path, "[client]\ntier = 1\n")
    assert load_client_config(path, environ={}, tier=3).tier == 3
    assert load_client_config(path, environ={}).tier == 1
    with pytest.raises(ConfigError, match="--tier must be between 1 and 100, got 0"):
        load_client_config(path, environ={}, tier=0)


@pytest.mark.parametrize("body, key", [
    ("port = abc", "[client] port"),
    ("port = 0", "[client] port"),
    ("slots = 0", "[client] slots"),
    ("server_url = localhost:5000", "[client] server_url"),
    ("server_url = http://:5000", "[client] server_url"),
    ("server_url = http://host:port", "[client] server_url"),
    ("retention_hours = -3", "[client] retention_hours"),
    ("retention_hours = nan", "[client] retention_hours"),
    ("actor_admin_port = 70000", "[client] actor_admin_port"),
    ("max_upload_mb = 0", "[client] max_upload_mb"),
    ("threads = 999", "[client] threads"),
    ("tier = 0", "[client] tier"),
    ("tier = 101", "[client] tier"),
    ("tier = two", "[client] tier"),
    ("sevice = example", "'sevice'"),
    ("service = Not Valid", "--service"),
    ("data_dir = var/{name}", "[client] data_dir"),
    ("data_dir = var/{0}", "[client] data_dir"),
    ("data_dir = var/{service", "[client] data_dir"),
])
def test_each_bad_client_value_is_a_config_error_naming_its_key(tmp_path, body, key):
    with pytest.raises(ConfigError) as raised:
        load_client_config(ini(tmp_path, f"[client]\n{body}\n"), environ={})
    assert key in str(raised.value)


def test_an_unknown_client_key_is_named_with_its_section(tmp_path):
    with pytest.raises(ConfigError, match=r"\[client\] has unknown key 'slot'"):
        load_client_config(ini(tmp_path, "[client]\nslot = 3\n"), environ={})


def test_a_bad_client_port_option_is_named():
    with pytest.raises(ConfigError, match="--port"):
        load_client_config(None, environ={}, port=0)


# --- the trust boundary -------------------------------------------------------------------------

def test_portal_tokens_and_the_cluster_secret_are_read(tmp_path):
    path = server_ini(tmp_path, "host = 10.1.2.3\ncluster_secret = s3cret-s3cret-s3cret\n"
                                "[tokens]\nhaddock = aaaaaaaaaaaaaaaaaaaa\nprodigy = bbbbbbbbbbbbbbbbbbbb\n")
    config = load_server_config(path, environ={})
    assert config.tokens == (("haddock", "a" * 20), ("prodigy", "b" * 20))
    assert config.cluster_secret == "s3cret-s3cret-s3cret" and not config.allow_anonymous


def test_a_server_on_a_public_address_without_tokens_refuses_to_start_unless_told(tmp_path):
    with pytest.raises(ConfigError, match="not a loopback address and \\[tokens\\] is empty"):
        load_server_config(server_ini(tmp_path, "host = 0.0.0.0\n"), environ={})
    assert load_server_config(server_ini(tmp_path, "host = 0.0.0.0\nallow_anonymous = yes\n"
                                                   "cluster_secret = s3cret-s3cret-s3cret\n"), environ={}).allow_anonymous
    assert load_server_config(server_ini(tmp_path, "host = ::1\n"), environ={}).host == "::1"
    # Only a loopback server without portals (the `make run` default) runs without a cluster secret.
    assert load_server_config(server_ini(tmp_path, "host = localhost\n"), environ={}).cluster_secret == ""


@pytest.mark.parametrize("server, tokens, why", [
    ("", "haddock = aaaaaaaaaaaaaaaaaaaa", "while [tokens] has portals"),
    ("host = 10.1.2.3", "haddock = aaaaaaaaaaaaaaaaaaaa", "while [tokens] has portals"),
    ("host = 0.0.0.0\nallow_anonymous = true", "", "while host 0.0.0.0 is not a loopback address"),
])
def test_a_server_with_portals_or_off_loopback_needs_a_cluster_secret(tmp_path, server, tokens, why):
    path = server_ini(tmp_path, server, f"[service.example]\nclients = http://h:1\n[tokens]\n{tokens}\n")
    with pytest.raises(ConfigError) as error:
        load_server_config(path, environ={})
    assert str(error.value).startswith(f"[server] cluster_secret is empty {why}; set one")
    assert "each executor's [client] cluster_secret" in str(error.value)


def test_an_executor_on_a_public_address_without_a_cluster_secret_refuses_to_start(tmp_path):
    with pytest.raises(ConfigError, match="cluster_secret is empty"):
        load_client_config(ini(tmp_path, "[client]\nhost = 0.0.0.0\n"), environ={})


@pytest.mark.parametrize("text, words", [
    ("[tokens]\nhaddock = short\n", "[tokens] haddock must be at least 16"),
    ("[tokens]\nhaddock = aaaaaaaaaaaaaaaaaaaa\nprodigy = aaaaaaaaaaaaaaaaaaaa\n", "share one secret"),
    ("[tokens]\nBad Name = aaaaaaaaaaaaaaaaaaaa\n", "portal name"),
])
def test_weak_or_shared_portal_tokens_are_refused(tmp_path, text, words):
    with pytest.raises(ConfigError) as error:
        load_server_config(server_ini(tmp_path, "", "[service.example]\nclients = http://h:1\n" + text), environ={})
    assert words in str(error.value)


# --- how jobs run (client) ------------------------------------------------------------------------

def test_job_settings_are_read_and_a_service_section_overrides_them_for_that_service_only(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    path = ini(tmp_path, f"""
[client]
sandbox = bwrap
network = yes
pass_env = OMP_NUM_THREADS, LICENSE_SERVER
max_memory_mb = 2048
max_processes = 100
max_output_mb = 50
max_open_files = 256
[service.prodigy]
read_only_paths = {tools}
max_memory_mb = 512
network = no
[service.other]
max_memory_mb = 1
""")
    example = load_client_config(path, environ={})
    prodigy = load_client_config(path, environ={}, service="prodigy")

    assert (example.sandbox, example.network, example.pass_env) == ("bwrap", True, ("OMP_NUM_THREADS", "LICENSE_SERVER"))
    assert (example.max_memory_mb, example.max_processes, example.max_output_mb, example.max_open_files) == \
        (2048, 100, 50, 256)
    assert example.read_only_paths == ()
    assert (prodigy.max_memory_mb, prodigy.network, prodigy.read_only_paths) == (512, False, (str(tools),))
    assert prodigy.max_processes == 100  # not overridden: the [client] value


@pytest.mark.parametrize("body, words", [
    ("[client]\nsandbox = docker\n", "[client] sandbox must be bwrap, none"),
    ("[client]\nnetwork = maybe\n", "[client] network must be true or false"),
    ("[client]\nread_only_paths = /no/such/folder\n", "[client] read_only_paths names /no/such/folder"),
    ("[client]\npass_env = A-B\n", "[client] pass_env must list environment variable names"),
    ("[client]\nmax_memory_mb = 1\n", "[client] max_memory_mb must be between 16"),
    ("[client]\nmax_processes = lots\n", "[client] max_processes must be a whole number"),
    ("[client]\nmax_output_mb = 0\n", "[client] max_output_mb"),
    ("[client]\nmax_open_files = 3\n", "[client] max_open_files"),
    ("[service.example]\nslots = 3\n", "[service.example] has unknown key 'slots'"),
    ("[service.example]\nmax_memory_mb = x\n", "[service.example] max_memory_mb"),
    ("[services.example]\nnetwork = true\n", "section [services.example] is not known"),
])
def test_each_bad_job_setting_is_a_config_error_naming_its_key(tmp_path, body, words):
    with pytest.raises(ConfigError) as raised:
        load_client_config(ini(tmp_path, body), environ={})
    assert words in str(raised.value)


def test_operator_tokens_and_the_metrics_keys_are_read(tmp_path):
    config = load_server_config(server_ini(tmp_path, "metrics_public = true\nmetrics_cache_seconds = 5",
                                           "[service.example]\n[operators]\nalice = cccccccccccccccccccc\n"), {})
    assert config.operators == (("alice", "c" * 20),)
    assert config.metrics_public is True and config.metrics_cache_seconds == 5.0
    client = load_client_config(ini(tmp_path, "[client]\nmetrics_public = yes\n", "client.ini"), {})
    assert client.metrics_public is True


@pytest.mark.parametrize("operators, why", [
    ("alice = short", "\\[operators\\] alice must be at least 16 characters"),
    ("Alice! = cccccccccccccccccccc", "\\[operators\\] operator name 'alice!' is invalid"),
    ("alice = aaaaaaaaaaaaaaaaaaaa", "\\[operators\\] and \\[tokens\\] share a secret"),
])
def test_bad_operator_tokens_are_refused_with_the_key(tmp_path, operators, why):
    path = server_ini(tmp_path, "cluster_secret = ssssssssssssssssssss",
                      f"[service.example]\n[tokens]\nhaddock = aaaaaaaaaaaaaaaaaaaa\n[operators]\n{operators}\n")
    with pytest.raises(ConfigError, match=why):
        load_server_config(path, {})


# --- [tes] and a service's max_cores (GA4GH TES) ---------------------------------------------------

def test_the_tes_section_and_a_services_max_cores_are_read(tmp_path):
    config = load_server_config(ini(tmp_path, "[tes]\nimages = python:3.11=example\ndefault_service = example\n"
                                              "public_url = https://tes.example.org/orch/\n"
                                              "[service.example]\nmax_cores = 8\n"), environ={})

    assert config.tes.service_of("python:3.11") == config.tes.service_of("ubuntu") == "example"
    assert config.tes.public_url == "https://tes.example.org/orch"
    assert config.service("example").max_cores == 8


@pytest.mark.parametrize("text, words", [
    ("[tes]\npublic_url = tes.example.org\n[service.example]\n", r"\[tes\] public_url must be an http\(s\)"),
    ("[service.example]\nmax_cores = 0\n", r"\[service.example\] max_cores must be between 1"),
])
def test_a_bad_tes_key_is_refused_naming_it(tmp_path, text, words):
    with pytest.raises(ConfigError, match=words):
        load_server_config(ini(tmp_path, text), environ={})


SECRET_A, SECRET_B = "file-secret-0123456789", "env-secret-0123456789ab"


def test_the_container_variables_override_the_client_file(tmp_path):
    path = ini(tmp_path, f"[client]\nserver_url = http://a:5000\nadvertise_url = http://b:9000\n"
                         f"cluster_secret = {SECRET_A}\nlog_level = info\n")
    environ = {"SERVER_URL": "http://server:5000", "ADVERTISE_URL": "http://executor:9000",
               "CLUSTER_SECRET": SECRET_B, "LOG_LEVEL": "DEBUG", "LOG_FORMAT": "json"}
    config = load_client_config(path, environ=environ)
    assert (config.server_url, config.advertise_url, config.cluster_secret, config.log_level, config.log_format) == (
        "http://server:5000", "http://executor:9000", SECRET_B, "debug", "json")
    assert load_client_config(path, environ=environ, log_level="warning").log_level == "warning"  # the option wins
    assert load_client_config(path, environ={}).cluster_secret == SECRET_A


def test_the_cluster_secret_may_come_from_a_file_as_docker_secrets_and_systemd_credentials_give_it(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(SECRET_B + "\n")
    config = load_server_config(server_ini(tmp_path, f"cluster_secret = {SECRET_A}"),
                                environ={"CLUSTER_SECRET_FILE": str(secret)})
    assert config.cluster_secret == SECRET_B


@pytest.mark.parametrize("environ, named", [
    ({"CLUSTER_SECRET": "short"}, "CLUSTER_SECRET must be at least 16"),
    ({"CLUSTER_SECRET_FILE": "/nonexistent/secret"}, "CLUSTER_SECRET_FILE /nonexistent/secret cannot be read"),
    ({"CLUSTER_SECRET_FILE": "/dev/null"}, "CLUSTER_SECRET_FILE /dev/null must hold the secret"),
    ({"CLUSTER_SECRET_FILE": "/dev/zero"}, "printable"),
    ({"CLUSTER_SECRET": "x" * 4097}, "at most 4096"),
    ({"CLUSTER_SECRET": SECRET_B, "CLUSTER_SECRET_FILE": "/x"}, "both set"),
    ({"SERVER_URL": "server:5000"}, "SERVER_URL"),
    ({"ADVERTISE_URL": "ftp://x"}, "ADVERTISE_URL"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be one of"),
])
def test_a_bad_container_variable_is_a_config_error_naming_it(tmp_path, environ, named):
    with pytest.raises(ConfigError) as raised:
        load_client_config(ini(tmp_path, "[client]\n"), environ=environ)
    assert named in str(raised.value)


def test_a_secret_file_longer_than_a_secret_is_refused_not_cut(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s" * 5000)
    with pytest.raises(ConfigError, match="it is longer"):
        load_client_config(ini(tmp_path, "[client]\n"), environ={"CLUSTER_SECRET_FILE": str(secret)})
