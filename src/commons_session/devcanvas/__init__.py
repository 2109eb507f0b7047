"""``commons-session dev-canvas``: a local stand-in for the parts of Canvas this service touches.

A test and demo tool, never part of serving: it runs only when asked. See docs/dev-canvas.md.
"""
