"""Persistence: Pony entities, the job state machine, and the operations web and actors share."""
