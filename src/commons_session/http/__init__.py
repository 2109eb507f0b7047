"""The HTTP layer: routes, session-id carriers, problem responses, middleware."""
