"""
Garbage-collector settings for the gateway process.

CPython's cyclic collector runs a young collection every 700 container
allocations and a full one when enough objects have survived into the old
generation.  A proxy with thousands of requests in flight keeps every
request's objects (channel, request, headers, exchange) alive across many
young collections, so they are promoted, and full collections, each walking
every live object, follow one another: measured with 4,000 client
connections (bench/http_bench.py --scaling), the collector took 2.0 to 2.5 s
of every 8 s of gateway CPU time, with full collections of about 0.25 s
each, against 0.4 s at 100 connections.

L{tuneGarbageCollector} raises the young-generation threshold to
L{YOUNG_THRESHOLD} allocations, so most request objects are freed by
reference counting before any collection sees them and few are promoted
(same measurement: 0.15 s of collector time in 8 s, no full collection),
and freezes the objects that exist once the service tree is built (modules,
configuration, routing tables, pools, TLS contexts) out of every later
collection.  Cyclic
garbage waits for at most that many allocations before it is freed.
PyPy's collector works differently and is left alone.
"""

from __future__ import annotations

import gc
import platform

__all__ = ["YOUNG_THRESHOLD", "tuneGarbageCollector"]

YOUNG_THRESHOLD = 50_000
"""Container allocations between young collections (CPython's default: 700)."""


def tuneGarbageCollector() -> bool:
    """Apply the settings above to this (CPython) process; False elsewhere."""
    if platform.python_implementation() != "CPython":
        return False
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    gc.freeze()
    return True
