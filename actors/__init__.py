"""Thespian actors of the server (queue, quota, dispatchers, retriever, janitor, supervisor) and of
the executor node. `actors.messages` is the only module the web layer imports."""
