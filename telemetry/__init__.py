"""Traces and process-wide metrics, usable from every layer (like ``config``).

``telemetry.tracing`` wraps OpenTelemetry (spans, W3C ``traceparent``);
``telemetry.metrics`` holds the Prometheus counters and histograms that
storage, actors and the edge record into as things happen. Neither imports
anything of ours, so ``storage`` and ``actors`` may use them freely.
"""
