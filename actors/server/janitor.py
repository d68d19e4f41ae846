"""JanitorActor: deletes the data of ended jobs once their retention period has passed.

Accepts: WakeupMessage (its own timer). Sends nothing to other actors. A swept job becomes Cleaned:
its folder and result zip (with a TES task's sidecar of it) are removed here, and its copy on the
executor is deleted (best effort; the executor's own retention removes what this misses). Its row
stays, so its history still answers. The change feed's entries and their webhook deliveries are
deleted after `change_log_seconds` (the longest retention, or webhook_retry_hours if longer: no
delivery still being tried is deleted).
"""
from __future__ import annotations

import shutil
from datetime import datetime, timedelta

from thespian.actors import WakeupMessage

from actors.messages import Configure
from actors.server.base import ServerActor
from actors.server.executor_link import ExecutorLink, ExecutorUnreachable
from actors.server.scheduling import expiry_cutoffs
from conf.logs import event
from conf.settings import sweep_interval
from storage import changes, jobs, tes_tasks
from storage import clock

BATCH = 500


class JanitorActor(ServerActor):
    role = "janitor"

    def configured(self, msg: Configure) -> None:
        self.link = ExecutorLink(self.config.cluster_secret)
        retentions = [self.config.retention_seconds(s.name) for s in self.config.services]
        self.interval = sweep_interval([self.config.retention_hours * 3600.0, *retentions])
        self.wakeupAfter(self.interval)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        try:
            while self.sweep(clock.utcnow()) == BATCH:
                pass
            self.prune(clock.utcnow())
        finally:
            self.wakeupAfter(self.interval)

    def prune(self, now: datetime) -> int:
        """Delete the change-log entries (and webhook deliveries) kept long enough; returns how many."""
        return changes.prune(now - timedelta(seconds=self.config.change_log_seconds))

    def sweep(self, now: datetime) -> int:
        """Clean every job past its retention (at most BATCH); returns how many were cleaned."""
        cutoffs = expiry_cutoffs([s.name for s in self.config.services], self.config.retention_seconds, now)
        default = now - timedelta(hours=self.config.retention_hours)
        expired = jobs.expired(cutoffs, default, BATCH)
        for job in expired:
            if jobs.mark_cleaned(job.id, now):
                event(self.log, "cleaned", job=job.id, service=job.service)
            shutil.rmtree(job.dir, ignore_errors=True)
            result = self.config.result_file(job.id)
            jobs.remove_file(result)
            jobs.remove_file(tes_tasks.sidecar(result))  # after the result: see web/tes/results.py `_keep`
            if job.executor and job.remote_id:
                try:
                    self.link.delete(job.executor, job.remote_id)
                except ExecutorUnreachable:
                    pass
        return len(expired)
