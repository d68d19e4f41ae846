"""`python -m orchestrator_client`: the `orchestrator` command."""
from orchestrator_client.cli import main

raise SystemExit(main())
