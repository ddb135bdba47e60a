"""
C{headerRoute}: send requests whose header or cookie matches a pattern to
another backend (canary releases, internal testers, A/B by opt-in)::

    [requestRoutingRule:canary]
    ruleType = Plugin
    httpListener = l1
    plugin = headerRoute
    plugin.header = X-Canary                    ; and/or plugin.cookie = canary
    plugin.match = ^1$                          ; Python regex, searched
    plugin.ignoreCase = false                   ; optional
    plugin.backendAddressPool = canaryPool      ; or plugin.redirectConfiguration
    plugin.backendHttpSettings = canarySettings
    backendAddressPool = mainPool               ; everything else (optional)
    backendHttpSettings = mainSettings

A request matches when any value of the header, or the cookie, matches;
it then goes to the plugin's target, otherwise to the rule's own
(a 404 when the rule has none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from twisted.plugin import IPlugin
from zope.interface import implementer

from agwtx.interfaces import (
    BackendRef,
    Candidates,
    IRoutingPlugin,
    PluginConfigError,
    boolOption,
    checkOptionKeys,
    PluginRuleConfig,
    RedirectRef,
    RoutingRequest,
)

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True)
class HeaderRouteOptions:
    header: str | None
    cookie: str | None
    search: Any
    pool: str | None
    settings: str | None
    redirect: str | None


@implementer(IPlugin, IRoutingPlugin)
class HeaderRoute:
    name = "headerRoute"

    def configure(self, options: Mapping[str, str], section: str) -> PluginRuleConfig:
        checkOptionKeys(
            options,
            required=("match",),
            optional=(
                "header",
                "cookie",
                "ignoreCase",
                "backendAddressPool",
                "backendHttpSettings",
                "redirectConfiguration",
            ),
        )
        get = lambda key: (options.get(key) or "").strip() or None  # noqa: E731
        header, cookie = get("header"), get("cookie")
        if header is None and cookie is None:
            raise PluginConfigError("header", "expected plugin.header or plugin.cookie (or both)")
        for key, value in (("header", header), ("cookie", cookie)):
            if value is not None and not _TOKEN_RE.fullmatch(value):
                raise PluginConfigError(key, f"expected a {key} name, got {value!r}")
        ignoreCase = boolOption(options, "ignoreCase", False)
        pattern = options["match"]
        try:
            regex = re.compile(pattern, re.IGNORECASE if ignoreCase else 0)
        except re.error as e:
            raise PluginConfigError(
                "match", f"pattern {pattern!r} is not a valid regular expression: {e}"
            ) from None
        pool, settings, redirect = (
            get("backendAddressPool"),
            get("backendHttpSettings"),
            get("redirectConfiguration"),
        )
        if (pool is None) != (settings is None):
            given, missing = (
                ("backendAddressPool", "backendHttpSettings")
                if pool
                else ("backendHttpSettings", "backendAddressPool")
            )
            raise PluginConfigError(given, f"needs plugin.{missing} as well")
        if redirect is not None and pool is not None:
            raise PluginConfigError(
                "redirectConfiguration",
                "expected either plugin.backendAddressPool and plugin.backendHttpSettings "
                "or plugin.redirectConfiguration, not both",
            )
        if redirect is None and pool is None:
            raise PluginConfigError(
                "backendAddressPool",
                "expected plugin.backendAddressPool and plugin.backendHttpSettings, "
                "or plugin.redirectConfiguration",
            )
        return PluginRuleConfig(
            options=HeaderRouteOptions(
                header=header.lower() if header else None,
                cookie=cookie,
                search=regex.search,
                pool=pool,
                settings=settings,
                redirect=redirect,
            ),
            backends=(
                (BackendRef(pool, settings, "backendAddressPool", "backendHttpSettings"),)
                if pool and settings
                else ()
            ),
            redirects=(RedirectRef(redirect, "redirectConfiguration"),) if redirect else (),
        )

    def route(self, request: RoutingRequest, candidates: Candidates) -> Any:
        opts: HeaderRouteOptions = candidates.options
        matched = False
        if opts.header is not None:
            matched = any(opts.search(v) for v in request.headers.get(opts.header, ()))
        if not matched and opts.cookie is not None:
            value = request.cookies.get(opts.cookie)
            matched = value is not None and opts.search(value) is not None
        if not matched:
            return None
        if opts.redirect is not None:
            return candidates.redirect(opts.redirect)
        assert opts.pool is not None and opts.settings is not None
        return candidates.backend(opts.pool, opts.settings)


headerRoute = HeaderRoute()
