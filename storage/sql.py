"""SQL written with named parameters, sent with asyncpg's positional ones.

A statement is written with ``$name`` parameters, so each part of a composed
statement (a unit of work's own CTEs, the event log's, each projection's)
names what it uses and nobody counts ``$n``. :func:`q` converts the composed
text once (cached per text) into asyncpg's ``$1..$n``, numbered in the order
the names first appear, and :meth:`Q.args` puts the values in that order.
The same name used twice is one parameter.

Write no ``$`` in comments or string literals of such SQL: every ``$name`` is a parameter.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

__all__ = ["Q", "q"]

_NAME = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class Q:
    """One statement: its text with ``$1..$n`` and the parameter name of each ``$k``.

    Args:
      src: the SQL with ``$name`` parameters.
    """

    __slots__ = ("src", "sql", "names")

    def __init__(self, src: str) -> None:
        names: list[str] = []

        def number(match: re.Match) -> str:
            name = match.group(1)
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        self.src = src
        self.sql = _NAME.sub(number, src)
        self.names = tuple(names)

    def args(self, values: Mapping[str, object]) -> list:
        """The values in ``$1..$n`` order.

        Raises:
          KeyError: a parameter of the statement has no value.
        """
        return [values[name] for name in self.names]

    def __repr__(self) -> str:
        return f"Q({self.src!r})"


@functools.lru_cache(maxsize=512)
def q(src: str) -> Q:
    """The :class:`Q` of ``src``, converted once per distinct text."""
    return Q(src)
