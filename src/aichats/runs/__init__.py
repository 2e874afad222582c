"""A process's background work: agent turns as queued work (runs stored in the database,
claimed by workers), beside the scheduler, the webhook sender and housekeeping, all under
one supervisor (:mod:`aichats.runs.background`)."""
