"""Pure rules: no I/O, no clock (time is passed in), no randomness (bytes are passed in).

    types      ids and frozen values: EntityRef, Execution, Lease, …
    policy     Cedar policy sets → Decision (validation, versions, per-action slices)
    lease      execution state transitions, each taking now_ms
    lineage    the execution tree: children, inheritance, cascading revocation
    grant      the signed grant an allowed execution carries

Everything here is tested without a server, a database or sleeping.
"""
