"""Writes to the chunk log and to generations, one module per concern.

Every function here runs inside a transaction and is called through
`database_sync_to_async` from async code (the `a`-prefixed twins beside the functions):
transactions and locks never live in coroutines. Events are published only once their
rows commit (invariant I2).
"""
