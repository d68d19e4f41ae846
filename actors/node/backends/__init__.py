"""Where an executor node's tasks run: on this host (local.py) or as Slurm jobs (slurm.py, with its
command-line tools and health check); base.py holds what every backend tells the ExecutorActor."""
