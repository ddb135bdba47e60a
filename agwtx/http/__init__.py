"""The HTTP front: the twisted.web site and request, PROXY protocol, request ids, connection limits, deadlines and error pages."""
