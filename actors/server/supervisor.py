"""SupervisorActor: starts the server's actors, re-creates any that exits, and routes outside mail.

Accepts: Configure (from run_server.py: start everything, then answer Pong), Directory (answer
the children's addresses and pids, so the web layer can write to them directly), Forward (from the
web layer; handed to the named child: its way in while it knows no child's address), Ping, Roster
(answer each actor's pid),
ActorStarted, ChildActorExited (re-create that child, then tell everyone the new addresses),
WakeupMessage (a delayed restart).

A service no longer configured whose jobs are still on executors keeps a dispatcher ("retired")
until the next start: it watches those jobs to their end (see actors/server/dispatcher.py).

A child that keeps dying is re-created at most RESTART_BURST times per RESTART_WINDOW seconds;
after that it is re-created on a timer, so a crash loop cannot spin the machine.
"""
from __future__ import annotations

import os

from thespian.actors import ChildActorExited, WakeupMessage

from actors.messages import ActorStarted, Configure, Directory, Forward, Peers, Pong, Roster, Routes
from actors.server.base import ServerActor
from storage import database, job_events, jobs
from storage import clock
from storage.models import db

ROLES = {
    "queue": "actors.server.queue.QueueActor",
    "quota": "actors.server.quota.QuotaActor",
    "retriever": "actors.server.retriever.RetrieverActor",
    "janitor": "actors.server.janitor.JanitorActor",
    "webhooks": "actors.server.webhooks.WebhookActor",  # only when webhooks are on (`all_roles`)
}
DISPATCHER = "actors.server.dispatcher.DispatcherActor"
RESTART_BURST = 5
RESTART_WINDOW = 30.0
RESTART_DELAY = 2.0


class SupervisorActor(ServerActor):
    role = "supervisor"

    def configured(self, msg: Configure) -> None:
        known = [s.name for s in self.config.services]
        failed = jobs.fail_unserved(known, clock.utcnow())
        if failed:
            self.log.warning("failed %d waiting jobs of services no longer configured", len(failed))
            job_events.ended(self.log, *failed)
        # NOTE: a service dropped from the configuration keeps a dispatcher while jobs of it are on an
        # executor: it watches that executor (its loss fails them), and sends nothing new.
        self.retired = jobs.unserved_under_way(known)
        if self.retired:
            self.log.warning("services no longer configured still have jobs under way; watching them until "
                             "they end: %s", ", ".join(self.retired))
        self.children: dict[str, object] = {}
        self.restarts: dict[str, list[float]] = {}
        for role in self.all_roles():
            self.start_child(role)
        self.broadcast_peers()

    def receiveMsg_Configure(self, msg: Configure, sender) -> None:
        self.processes: dict[str, int] = {"supervisor": os.getpid()}
        self.config = msg.config
        database.bind(db, msg.config.database_url, create_tables=False)
        self.configured(msg)
        self.send(sender, Pong(self.role, (("supervisor", os.getpid()),)))  # run_server.py waits for this

    def receiveMsg_ActorStarted(self, msg: ActorStarted, sender) -> None:
        self.processes[msg.role] = msg.pid

    def receiveMsg_Roster(self, msg: Roster, sender) -> None:
        self.send(sender, Pong(self.role, tuple(sorted(self.processes.items()))))

    def receiveMsg_Directory(self, msg: Directory, sender) -> None:
        self.send(sender, Routes(tuple((role, address, self.processes[role])
                                       for role, address in self.children.items() if role in self.processes)))

    def all_roles(self) -> list[str]:
        services = [*(s.name for s in self.config.services), *self.retired]
        roles = [role for role in ROLES if role != "webhooks" or self.config.webhooks_on]
        return [*roles, *(f"dispatcher:{name}" for name in services)]

    def start_child(self, role: str) -> None:
        service = role.partition(":")[2]
        address = self.createActor(DISPATCHER if service else ROLES[role])
        self.children[role] = address
        self.processes.pop(role, None)  # the old pid; the new child's ActorStarted brings its own
        self.send(address, Configure(self.config, service))

    def broadcast_peers(self) -> None:
        peers = Peers(
            queue=self.children["queue"], quota=self.children["quota"], retriever=self.children["retriever"],
            janitor=self.children["janitor"],
            dispatchers=tuple((role.partition(":")[2], addr) for role, addr in self.children.items()
                              if role.startswith("dispatcher:")),
        )
        for address in self.children.values():
            self.send(address, peers)
        self.peers = peers

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender) -> None:
        role = next((r for r, a in self.children.items() if a == msg.childAddress), None)
        if role is None or self.config is None or self.stopping:
            return
        now = clock.monotonic()
        recent = [t for t in self.restarts.get(role, []) if now - t < RESTART_WINDOW]
        self.restarts[role] = recent + [now]
        if len(recent) >= RESTART_BURST:
            self.log.error("%s keeps exiting; re-creating it in %.0f s", role, RESTART_DELAY)
            self.wakeupAfter(RESTART_DELAY, payload=role)
            return
        self.log.warning("%s exited; re-creating it", role)
        self.restart(role)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        if msg.payload in self.children:
            self.restart(msg.payload)

    def restart(self, role: str) -> None:
        self.start_child(role)
        self.broadcast_peers()

    def receiveMsg_Forward(self, msg: Forward, sender) -> None:
        child = self.children.get(msg.role)
        if child is not None:
            self.send(child, msg.message)
