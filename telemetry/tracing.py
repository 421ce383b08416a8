"""OpenTelemetry tracing: one tracer per process, spans as context managers,
and the W3C ``traceparent`` in and out.

The current span lives in OpenTelemetry's context, which is a
``contextvars.ContextVar``. Trio gives each task its own copy of the context
(taken from the task that spawned it), so a span started in a request's task
is the parent of whatever that task awaits. Three crossings need help, and
each is handled where it happens:

- trio → the database loop thread: :meth:`storage.loop_thread.LoopThread.run`
  runs the unit of work in a copy of the caller's context;
- sender → actor: :class:`actors.runtime.Mailbox` carries the sender's context
  in the envelope and the actor attaches it while handling the message;
- now → later (an event's outgoing webhook, a stored gateway webhook's apply,
  the realtime push of committed messages): the ``traceparent`` is stored with
  the row (or sent in the NOTIFY) and continued from there.

With ``PAYCAST_OTEL_EXPORTER=none`` no SDK is installed: the API's no-op tracer
records nothing but still passes an incoming ``traceparent`` through to the
events and outgoing webhooks it causes, as OpenTelemetry's API does.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("paycast.tracing")

EXPORTERS = ("none", "console", "otlp")
Context = otel_context.Context

_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: Any = None  # the SDK TracerProvider when one is installed
# fallback_trace's made-up traceparent: [] until first asked, then [traceparent]; None outside it.
_FALLBACK_KEY = otel_context.create_key("paycast-fallback-trace")


class TracingConfigError(Exception):
    """The exporter asked for cannot be set up (unknown name, package missing)."""


def configure(exporter: str, *, span_exporter: Any = None, service_name: str = "paycast") -> None:
    """Install the tracer for this process (again: the previous one is shut down).

    Args:
      exporter: ``none`` (no SDK, nothing recorded), ``console`` (spans as JSON
        on stdout) or ``otlp`` (the standard ``OTEL_EXPORTER_OTLP_*`` variables).
      span_exporter: an SDK ``SpanExporter`` to export to synchronously
        instead (tests: ``InMemorySpanExporter``); overrides ``exporter``.
      service_name: the ``service.name`` resource attribute.

    Raises:
      TracingConfigError: unknown exporter, or ``otlp`` without its package.
    """
    global _tracer, _provider
    if exporter not in EXPORTERS:
        raise TracingConfigError(f"unknown exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")
    shutdown()
    if span_exporter is None and exporter == "none":
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if span_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    elif exporter == "console":
        # Batched on the SDK's own thread with a bounded queue (it drops, never blocks us).
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise TracingConfigError("PAYCAST_OTEL_EXPORTER=otlp needs the 'otlp' extra "
                                     "(opentelemetry-exporter-otlp-proto-http)") from exc
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _provider = provider
    _tracer = provider.get_tracer("paycast")


def shutdown() -> None:
    """Flush and stop the installed SDK (idempotent); back to the no-op tracer."""
    global _tracer, _provider
    provider, _provider = _provider, None
    _tracer = trace.NoOpTracer()
    if provider is not None:
        provider.shutdown()


def recording() -> bool:
    """True when spans are recorded (an SDK is installed)."""
    return _provider is not None


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None, *, parent: Context | None = None,
         kind: SpanKind = SpanKind.INTERNAL, links: Iterable[Context] = ()) -> Iterator[Span]:
    """A span that is current inside the block; an exception escaping it marks it ERROR.

    Args:
      name: low-cardinality name (``db payments.settle``, ``actor payment Confirm``).
      attributes: span attributes.
      parent: continue this context instead of the current one (a stored ``traceparent``).
      kind: the OpenTelemetry span kind.
      links: contexts this span also belongs to (a group commit links the requests of its batch).
    """
    if _provider is None:
        # No SDK: the API's no-op span would only re-wrap the parent's span context,
        # so attaching the parent (if any) is the same thing, at a fraction of the cost
        # (bench/RESULTS.md "Measurements cited by the code").
        if parent is None:
            yield trace.get_current_span()
        else:
            with attached(parent):
                yield trace.get_current_span()
        return
    span_links = None
    if links:
        span_links = [trace.Link(sc) for sc in (trace.get_current_span(c).get_span_context() for c in links)
                      if sc.is_valid]
    with _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes,
                                       links=span_links) as current:
        yield current


def current_span() -> Span:
    """The current span (a non-recording one outside any trace)."""
    return trace.get_current_span()


def capture() -> Context:
    """The current context, to carry to another task (see :func:`attached`)."""
    return otel_context.get_current()


@contextlib.contextmanager
def attached(ctx: Context | None) -> Iterator[None]:
    """Make ``ctx`` (from :func:`capture`) current inside the block."""
    if ctx is None:
        yield
        return
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span (or of :func:`fallback_trace`'s new trace),
    or None outside any trace."""
    sc = trace.get_current_span().get_span_context()
    if not sc.is_valid:
        made_up = otel_context.get_value(_FALLBACK_KEY)
        if made_up is None:
            return None
        if not made_up:
            made_up.append(new_traceparent())
        return made_up[0]
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"


def from_traceparent(traceparent: str | None) -> Context | None:
    """The context a stored or received ``traceparent`` describes (None if absent or malformed)."""
    if not traceparent:
        return None
    ctx = _PROPAGATOR.extract({"traceparent": traceparent}, context=Context())
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


@contextlib.contextmanager
def fallback_trace() -> Iterator[None]:
    """Inside the block, work that finds itself in no trace belongs to one new trace.

    With an SDK installed a span started without a parent is already the root of
    a new trace, so this does nothing. Without one (``PAYCAST_OTEL_EXPORTER=none``)
    the API's spans are invalid and the work would carry no ``traceparent``; here
    :func:`current_traceparent` then answers one made-up ``traceparent``, the same
    for the whole block (the database thread and actors run in copies of this
    context and share it), created on first use, so a request that writes no
    event pays only the attach. The events the work writes and the outgoing
    webhooks they cause name that trace (docs/api.md: "even when the request that
    caused it had none").
    """
    if _provider is not None:
        yield
        return
    # Kept in OpenTelemetry's context (not a variable of our own) so it crosses to actors
    # the way spans do: the mailbox carries the sender's OpenTelemetry context.
    token = otel_context.attach(otel_context.set_value(_FALLBACK_KEY, []))
    try:
        yield
    finally:
        otel_context.detach(token)


def new_traceparent() -> str:
    """A W3C ``traceparent`` of a new trace: random non-zero ids; no span is recorded. It is
    marked sampled, so a receiver that samples by its parent records what follows."""
    return f"00-{random.getrandbits(128) or 1:032x}-{random.getrandbits(64) or 1:016x}-01"


def from_asgi_headers(headers: list[tuple[bytes, bytes]]) -> Context | None:
    """The context of an incoming request's ``traceparent``/``tracestate`` headers, if valid."""
    carrier: dict[str, str] = {}
    for key, value in headers:
        if key in (b"traceparent", b"tracestate"):
            carrier[key.decode("latin-1")] = value.decode("latin-1")
    if "traceparent" not in carrier:
        return None
    ctx = _PROPAGATOR.extract(carrier, context=Context())
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def set_error(current: Span, description: str) -> None:
    """Mark ``current`` failed without an exception (e.g. a 5xx answer, a failed send)."""
    current.set_status(Status(StatusCode.ERROR, description))


__all__ = ["Context", "EXPORTERS", "SpanKind", "TracingConfigError", "attached", "capture", "configure",
           "current_span", "current_traceparent", "fallback_trace", "from_asgi_headers", "from_traceparent",
           "new_traceparent", "recording", "set_error", "shutdown", "span"]
