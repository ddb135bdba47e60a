"""
Converting where requests go: Azure's backend address pools, probes and
backend HTTP settings (and whether settings can keep their probe).
"""

from __future__ import annotations

from typing import Any

from agwtx.config.values import PORT_RANGE, SECONDS_MAX, UNHEALTHY_THRESHOLD_MAX
from agwtx.tools.armimport.base import _ConverterBase
from agwtx.tools.armimport.evaluate import _isOpaque, _why
from agwtx.tools.armimport.read import _get, _isEmpty, _View
from agwtx.tools.armimport.sections import _Item, _brief


class _BackendConverters(_ConverterBase):
    """Converts backend address pools, probes and backend HTTP settings."""

    def _backendAddressPool(self, item: _Item, view: _View) -> None:
        addresses = view.get("backendAddresses")
        if isinstance(addresses, str) and _isOpaque(addresses):
            item.notConverted(f"backendAddresses = {_brief(addresses)}", _why(addresses))
            return
        if _isEmpty(addresses):
            item.comment("the input lists no backendAddresses: add the members by hand")
            return
        if not isinstance(addresses, list):
            item.notConverted(f"backendAddresses = {_brief(addresses)}", "expected a list")
            return
        members: list[str] = []
        for entry in addresses:
            if isinstance(entry, str):
                host: Any = entry
            elif isinstance(entry, dict):
                host = _get(entry, "ipAddress") or _get(entry, "fqdn")
                others = [
                    k for k, v in entry.items() if k.lower() not in ("ipaddress", "fqdn") and not _isEmpty(v)
                ]
                if others:
                    item.notConverted(f"backendAddresses: {_brief(entry)}", "agw takes ipAddress or fqdn")
            else:
                host = None
            if _isOpaque(host):
                item.notConverted(f"backend address {_brief(host)}", _why(host))
                continue
            if not isinstance(host, str) or not host.strip():
                item.notConverted(f"backend address {_brief(entry)}", "expected ipAddress or fqdn")
                continue
            text = self.checked(item, "backend address", host.strip().lower())
            if text is None:
                continue
            if "," in text or " " in text:
                item.notConverted(f"backend address {text}", "not an address")
                continue
            if text not in members:
                members.append(text)
        if members:
            item.add("backendAddresses", ", ".join(members))

    def _probe(self, item: _Item, view: _View) -> None:
        protocol = self.protocol(item, view)
        if protocol is not None:
            item.add("protocol", protocol)
        item.info["protocol"] = protocol or "Http"
        pick, _ = self.hostOrPick(item, view, "host", "pickHostNameFromBackendHttpSettings")
        item.info["pick"] = pick
        path = self.text(item, view, "path")
        if path:
            item.add("path", path)
        port = self.number(item, view, "port", *PORT_RANGE)
        if port is not None:
            item.add("port", str(port))
        for key, lo, hi in (
            ("interval", 1, SECONDS_MAX),
            ("timeout", 1, SECONDS_MAX),
            ("unhealthyThreshold", 1, UNHEALTHY_THRESHOLD_MAX),
        ):
            number = self.number(item, view, key, lo, hi)
            if number is not None:
                item.add(key, str(number))
        match = view.get("match")
        if isinstance(match, dict):
            matchView = _View(match)
            codes = self.value(item, matchView, "statusCodes", "match.statusCodes")
            if isinstance(codes, str):
                codes = [codes]
            if isinstance(codes, list) and codes:
                checked = self.checked(item, "match.statusCodes", ", ".join(str(c).strip() for c in codes))
                if checked:
                    item.add("match.statusCodes", checked)
            body = self.text(item, matchView, "body", "match.body")
            if body:
                item.add("match.body", body)
            for key, value in matchView.leftovers():
                if not _isEmpty(value):
                    item.notConverted(f"match.{key} = {_brief(value)}", "agw has no equivalent")
        elif not _isEmpty(match):
            item.notConverted(f"match = {_brief(match)}", "expected an object")

    def _backendHttpSettings(self, item: _Item, view: _View) -> None:
        port = self.number(item, view, "port", *PORT_RANGE)
        if port is not None:
            item.add("port", str(port))
        protocol = self.protocol(item, view)
        if protocol is not None:
            item.add("protocol", protocol)
        protocol = protocol or "Http"
        affinity = self.flag(item, view, "cookieBasedAffinity")
        if affinity is not None:
            item.add("cookieBasedAffinity", "Enabled" if affinity else "Disabled")
        cookie = self.text(item, view, "affinityCookieName")
        if cookie:
            item.add("affinityCookieName", cookie)
        timeout = self.number(item, view, "requestTimeout", 1, SECONDS_MAX)
        if timeout is not None:
            item.add("requestTimeout", str(timeout))
        probeEnabled = self.flag(item, view, "probeEnabled")
        probe = self.ref(item, view, "probe", "probe")
        if probe is not None and probeEnabled is False:
            item.notConverted(
                f"probe = {probe.azure}", "probeEnabled is false (agw then uses its default probe)"
            )
            probe = None
        pick, hostName = self.hostOrPick(item, view, "hostName", "pickHostNameFromBackendAddress")
        if probe is not None:
            target = self.lookup("probe", probe.azure)
            if target is not None and target.info.get("protocol", "Http") != protocol:
                item.notConverted(
                    f"probe = {probe.azure}",
                    f"the probe speaks {target.info.get('protocol')}, these settings {protocol} "
                    "(agw needs them to match)",
                )
            elif target is not None and target.info.get("pick") and not (pick or hostName):
                item.notConverted(
                    f"probe = {probe.azure}",
                    "the probe takes its host name from these settings, which set none",
                )
            else:
                item.add("probe", probe)
        draining = self.value(item, view, "connectionDraining")
        if isinstance(draining, dict):
            drainView = _View(draining)
            enabled = self.flag(item, drainView, "enabled", "connectionDraining.enabled")
            seconds = self.number(
                item,
                drainView,
                "drainTimeoutInSec",
                0,
                3600,
                "connectionDraining.drainTimeoutInSec",
            )
            item.add("connectionDraining", str(seconds or 0) if enabled else "0")
        elif not _isEmpty(draining):
            item.notConverted(f"connectionDraining = {_brief(draining)}", "expected an object")
        path = self.text(item, view, "path")
        if path:
            item.add("path", path)
        roots = view.get("trustedRootCertificates")
        if isinstance(roots, list) and roots:
            refs = self.refList(item, roots, "trustedRootCertificates", "trustedRootCertificate")
            if refs and protocol == "Http":
                item.comment("trustedRootCertificates ignored: the protocol is Http")
            elif refs:
                item.add("trustedRootCertificates", *refs)
        elif not _isEmpty(roots):
            item.notConverted(f"trustedRootCertificates = {_brief(roots)}", "expected a list")
        verify = self.flag(item, view, "validateCertChainAndExpiry")
        if verify is False:
            item.add("verifyCertificate", "false")
        sni = view.get("validateSNI")
        if sni is False:
            item.notConverted("validateSNI = false", "agw checks the name whenever it verifies")
        sniName = view.get("sniName")
        if not _isEmpty(sniName):
            item.notConverted(f"sniName = {_brief(sniName)}", "agw sends the host name as SNI")
