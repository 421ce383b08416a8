"""The realtime gateway's actors: connection, hub, LISTEN feed, presence; the
:class:`~actors.realtime.gateway.RealtimeGateway` facade ties them together."""
