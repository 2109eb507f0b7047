"""commons-session: the Instructure Commons Session API."""

__version__ = "0.1.0"
__all__ = ["__version__"]
