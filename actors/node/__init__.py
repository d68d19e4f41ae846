"""An executor node's actor (run_client.py): the ExecutorActor, its reporter to the server, and how
it runs a job (sandbox, cgroups, launchers, limits, the script's processes). Never imports the
server's storage: the node keeps its own task table (storage/node/)."""
