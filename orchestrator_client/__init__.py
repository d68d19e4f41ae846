"""A client of the orchestrator's portal API, for portals (Django, Flask) and for the `orchestrator`
command (cli.py). Runs in the portal's or the user's process; it reaches the server over HTTP only."""
from orchestrator_client.client import ENDED, Client, LogChunk, OrchestratorError

__all__ = ["Client", "OrchestratorError", "LogChunk", "ENDED"]
