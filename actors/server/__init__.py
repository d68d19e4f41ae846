"""The server's actors (run_server.py): supervisor, queue, quota, one dispatcher per service,
retriever, janitor, and what only they use (their base, the scheduling decisions, the HTTP link to
executors). Each runs in a process of its own, forked by the server's actor system."""
