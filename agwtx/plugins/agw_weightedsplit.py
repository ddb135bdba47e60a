"""
C{weightedSplit}: split traffic between backends by weight, each client
staying on the backend it got first (blue/green shifts, gradual rollouts)::

    [requestRoutingRule:split]
    ruleType = Plugin
    httpListener = l1
    plugin = weightedSplit
    plugin.targets = poolA/settingsA:90, poolB/settingsB:10
    plugin.sticky = true                        ; optional, default true
    plugin.cookieName = AGWSplit                ; optional, default AGWSplit

Weights are integers 0..10000 (0 takes no new clients but keeps sticky
ones); at least one must be positive.  Stickiness is a cookie whose value
names the chosen backend, signed with the gateway's affinity secret (set
C{[gateway] affinitySecret} so that every instance honours it): a forged
or stale cookie is ignored and the client is split again.  The split does
not look at health; each backend's own pool balances over its healthy
members and answers 502 when it has none.
"""

from __future__ import annotations

import bisect
import random
import re
from dataclasses import dataclass
from typing import Any, Mapping

from twisted.plugin import IPlugin
from zope.interface import implementer

from agwtx.interfaces import (
    BackendRef,
    Candidates,
    Decision,
    IRoutingPlugin,
    PluginConfigError,
    boolOption,
    checkOptionKeys,
    PluginRuleConfig,
    RoutingRequest,
)

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_ITEM_RE = re.compile(r"(?P<pool>[^/:\s]+)\s*/\s*(?P<settings>[^/:\s]+)\s*:\s*(?P<weight>[0-9]+)")


@dataclass(frozen=True)
class SplitOptions:
    labels: tuple[str, ...]
    """C{pool/settings}, lowercased, one per target with a positive weight."""
    pairs: Mapping[str, tuple[str, str]]
    """Every target's label -> (pool, settings), zero weights included."""
    cumulative: tuple[int, ...]
    total: int
    sticky: bool
    cookieName: str


@implementer(IPlugin, IRoutingPlugin)
class WeightedSplit:
    name = "weightedSplit"

    def __init__(self, rng: random.Random | None = None) -> None:
        self.random = rng or random.Random()

    def configure(self, options: Mapping[str, str], section: str) -> PluginRuleConfig:
        checkOptionKeys(options, required=("targets",), optional=("sticky", "cookieName"))
        items = [item.strip() for item in options["targets"].split(",")]
        labels: list[str] = []
        cumulative: list[int] = []
        pairs: dict[str, tuple[str, str]] = {}
        refs: list[BackendRef] = []
        total = 0
        for item in items:
            m = _ITEM_RE.fullmatch(item)
            if m is None:
                raise PluginConfigError(
                    "targets",
                    f"expected POOL/SETTINGS:WEIGHT items separated by commas, got {item!r}",
                )
            pool, settings, weight = m.group("pool"), m.group("settings"), int(m.group("weight"))
            if weight > 10000:
                raise PluginConfigError("targets", f"expected a weight of 0..10000, got {weight} in {item!r}")
            label = f"{pool}/{settings}".lower()
            if label in pairs:
                raise PluginConfigError("targets", f"{pool}/{settings} is listed twice")
            pairs[label] = (pool, settings)
            refs.append(BackendRef(pool, settings, "targets"))
            if weight:
                total += weight
                labels.append(label)
                cumulative.append(total)
        if total == 0:
            raise PluginConfigError("targets", "expected at least one target with a weight above 0")
        sticky = boolOption(options, "sticky", True)
        cookieName = (options.get("cookieName") or "").strip() or "AGWSplit"
        if not _TOKEN_RE.fullmatch(cookieName):
            raise PluginConfigError("cookieName", f"expected a cookie name, got {cookieName!r}")
        return PluginRuleConfig(
            options=SplitOptions(
                labels=tuple(labels),
                pairs=pairs,
                cumulative=tuple(cumulative),
                total=total,
                sticky=sticky,
                cookieName=cookieName,
            ),
            backends=tuple(refs),
        )

    def route(self, request: RoutingRequest, candidates: Candidates) -> Any:
        opts: SplitOptions = candidates.options
        codec = candidates.codec
        scope = f"weightedSplit:{candidates.rule}"
        if opts.sticky and codec is not None:
            raw = request.cookies.get(opts.cookieName)
            if raw:
                label = codec.decode(scope, raw.encode("latin-1"))
                pair = opts.pairs.get(label) if label is not None else None
                if pair is not None:
                    return candidates.backend(*pair)
        label = opts.labels[bisect.bisect_right(opts.cumulative, self.random.randrange(opts.total))]
        target = candidates.backend(*opts.pairs[label])
        if not opts.sticky or codec is None:
            return target
        cookie = opts.cookieName.encode("ascii") + b"=" + codec.encode(scope, label) + b"; Path=/; HttpOnly"
        if request.secure:
            cookie += b"; Secure"
        return Decision(target, ((b"Set-Cookie", cookie),))


weightedSplit = WeightedSplit()
