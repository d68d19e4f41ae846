"""Thespian actors, by the process that runs them: `server/` (the server's actors), `node/` (an
executor node's actor and its backends), `runtime/` (the actor system and process plumbing both
share). `actors.messages` is the protocol between them, and the only module of this package the
web layer imports (besides the gateway's start-up through `runtime/`)."""
