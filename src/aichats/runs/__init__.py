"""Agent turns as queued work: runs stored in the database, claimed by workers."""
