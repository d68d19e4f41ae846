"""An executor node's own storage: its task table (models.py) and the operations on it (tasks.py),
in the node's SQLite file. Nothing here touches the server's database."""
