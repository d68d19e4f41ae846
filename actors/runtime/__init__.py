"""Process plumbing both kinds of node share, run in the node's main process and in its actor
system's processes: starting and stopping the actor system, signed frames, the lifeline that ties
every process to the node, the watchdog that rebuilds what dies, per-process logging."""
