"""One shape for every state machine: a transition table and the one function that reads it.

A machine is ``{(status, trigger): status}``. :meth:`StateMachine.next_status`
is the only way to move: it returns the next status or raises
:class:`domain.errors.IllegalTransition` naming the machine, the status and the
trigger. :meth:`StateMachine.can` asks first, for callers to whom an illegal
trigger is no error (a late or duplicate gateway answer changes nothing);
:meth:`StateMachine.sources` is the guard of a conditional update
(``WHERE status = ANY(...)``), so storage never restates a table.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from domain.errors import IllegalTransition

S = TypeVar("S", bound=enum.Enum)
T = TypeVar("T", bound=enum.Enum)


@dataclass(frozen=True)
class StateMachine(Generic[S, T]):
    """A transition table and what reads it.

    Attributes:
      name: the object it moves, as the refusal names it (``payment``).
      status: the status enum (strings are converted through it).
      transitions: every legal edge, ``{(status, trigger): next status}``.
      error: the :class:`IllegalTransition` subclass raised for a missing edge
        (its ``code`` is the contract's).
      verbs: how a refusal words a trigger (``"submit evidence for"``); the
        trigger's value otherwise.
    """

    name: str
    status: type[S]
    transitions: Mapping[tuple[S, T], S]
    error: type[IllegalTransition] = IllegalTransition
    verbs: Mapping[T, str] = field(default_factory=dict)

    def next_status(self, current: S | str, trigger: T) -> S:
        """The status after ``trigger``.

        Raises:
          IllegalTransition: (``self.error``) the table has no such edge (in
            particular, from any terminal status).
        """
        current = self.status(current)
        try:
            return self.transitions[(current, trigger)]
        except KeyError:
            raise self.error(self.name, current.value, trigger.value,
                              verb=self.verbs.get(trigger)) from None

    def can(self, current: S | str, trigger: T) -> bool:
        """True if ``trigger`` is legal from ``current``."""
        return (self.status(current), trigger) in self.transitions

    def sources(self, trigger: T) -> list[str]:
        """The statuses ``trigger`` may move from, as stored strings."""
        return [current.value for current, t in self.transitions if t is trigger]
