"""Stand-ins for real gateways that have no public fake (see each module's docstring)."""
