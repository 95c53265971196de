"""tlsgw: a transparent TLS-inspection gateway for a Linux bridge."""

__version__ = "0.1.0"
