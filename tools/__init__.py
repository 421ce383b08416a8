"""Operator tools that ``run.py`` runs: ``simulate`` (demo traffic, ``tools.simulate``) and
``simulate --chaos`` (a seeded fault schedule against its own servers,
``tools.chaos`` with ``chaos_cluster`` and ``chaos_leases``).

(``check``'s invariants are SQL, so they live with the rest of it: ``storage.invariants``.)
They read the database and drive servers from outside; nothing of the server
imports them. ``bench/`` may import them, never the reverse.
"""
