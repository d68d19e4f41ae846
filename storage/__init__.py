"""Persistence. The server's: Pony entities, the job state machine, the operations its web layer
and actors share, the registry of executors. An executor node's own task table: `storage/node/`."""
