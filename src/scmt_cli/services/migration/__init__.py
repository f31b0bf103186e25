"""The migration use cases: sync, failover, rollback, finalize, migrate, status.

One module per use case; :mod:`.context` holds what they share (plan, state
store, persisted per-VM status, locks, worker pool), :mod:`.source` the
vCenter factory and disk selection, :mod:`.diskcopy` the resumable CBT copy.
"""
