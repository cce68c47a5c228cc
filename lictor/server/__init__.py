"""The HTTP edge: app factory, routes, authentication."""
