"""Use cases: the pure rules (`lictor.core`, `lictor.log`) combined with the store and a clock.

One module per area: `log` (record and prove events), `runtimes`
(enforcement points and their credentials), `executions` (authorize, renew,
complete, revoke).
"""
