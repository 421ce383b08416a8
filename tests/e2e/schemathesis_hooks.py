"""Loaded into the ``st`` process through ``SCHEMATHESIS_HOOKS`` by tests/e2e/test_openapi.py.

CPython 3.11's ``ast`` conversion keeps its recursion depth in interpreter-wide state, so two
threads parsing at once can fail with "AST constructor recursion depth mismatch"
(python/cpython#106905, fixed in 3.12). Hypothesis parses the source of lambdas while it
generates (filter rewriting, descriptions), and ``st run --workers 2`` generates in two
threads: the run then reports a Runtime Error that says nothing about the server under test.
One lock around ``ast.parse`` serialises exactly the racing conversion; nothing else in the
run is slowed, since parsing happens once per lambda and is cached by hypothesis.
"""

import ast
import functools
import threading

_parse_lock = threading.Lock()
_unlocked_parse = ast.parse


@functools.wraps(_unlocked_parse)
def _parse_one_at_a_time(*args, **kwargs):
    with _parse_lock:
        return _unlocked_parse(*args, **kwargs)


ast.parse = _parse_one_at_a_time
