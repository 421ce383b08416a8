"""The PostgreSQL process side: the embedded server and its schema.

``pg.cluster`` starts, adopts and stops the embedded server in a data
directory; ``pg.leases`` counts the processes using it (the last one out stops
it); ``pg.supervisor`` restarts it under a running server; ``pg.migrate``
applies ``pg/migrations/`` to any database. Kept apart from ``storage/`` (the
database runtime, units of work and their SQL), as asyncpg keeps its
``cluster.py`` apart from ``pool.py``. Imports nothing of ours.
"""
