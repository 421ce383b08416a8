"""Process supervision beside ``run.py``: ``run.py serve --workers N`` starts N
``run.py serve`` processes on one port and restarts them (``processes.workers``).

It starts processes and passes signals; it does no request work and is not
part of the HTTP edge (``app/``), which it only asks for a shared-port socket.
"""
