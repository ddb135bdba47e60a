"""agw: an application gateway on Twisted and autobahn."""

__version__ = "0.1.0"
