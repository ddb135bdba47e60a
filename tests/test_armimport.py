"""
Tests for L{agwtx.tools.armimport}: Azure Application Gateway definitions (ARM
templates, C{az network application-gateway show} JSON) to agw INI.

The inputs live in C{tests/data/arm}:

  - C{websocket-article.json}: the httpListeners and requestRoutingRules
    snippets of Azure's WebSocket article, pasted verbatim (capitalised
    keys, C{')]} debris after ids, trailing commas) into a small template;
  - C{full.json}: a WAF_v2 template with path maps, an HTTP to HTTPS
    redirect, probes, two pools, a rewrite set, Key Vault certificate,
    parameters and variables;
  - C{az-show.json}: what C{az network application-gateway show} prints.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agwtx.tools.armimport import ArmEvaluator, ArmImportError, convert, findGateways, loadJson, main
from agwtx.config.loader import loadConfig
from agwtx.config.model import GatewayConfig
from tests.certs import CA, certPem, keyPem, selfSigned

DATA = Path(__file__).resolve().parent / "data" / "arm"
ARTICLE = DATA / "websocket-article.json"
FULL = DATA / "full.json"
AZ_SHOW = DATA / "az-show.json"


def runMain(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def imported(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> str:
    rc, out, err = runMain(capsys, *args, str(path))
    assert rc == 0, err
    assert err == ""
    return out


def sections(text: str) -> dict[str, list[str]]:
    """Converted sections: header -> its lines, comments included, blank lines dropped."""
    result: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("["):
            current = result.setdefault(line, [])
        elif current is not None and line.strip():
            current.append(line)
        elif not line.strip():
            current = None
    return result


def keys(text: str, header: str) -> list[str]:
    """The key lines (no comments) of one converted section."""
    return [line for line in sections(text)[header] if not line.startswith(";")]


def topComments(text: str) -> list[str]:
    """The comment block before the first blank line."""
    return text.split("\n\n", 1)[0].splitlines()


# ---------------------------------------------------------------------------
# (a) the WebSocket article's listener and rule snippets
# ---------------------------------------------------------------------------


def test_articleHeaderNamesTheSource(capsys: pytest.CaptureFixture[str]) -> None:
    out = imported(capsys, ARTICLE)
    first = out.splitlines()[0]
    assert first.startswith(";")
    assert str(ARTICLE) in first
    assert "; Azure application gateway: applicationGateway1 (ARM template, resources[0])" in out
    # The snippets have trailing commas: read leniently, and said so.
    assert "; note: the input is not strict JSON (comments or trailing commas); read leniently" in out


def test_articleListeners(capsys: pytest.CaptureFixture[str]) -> None:
    out = imported(capsys, ARTICLE)
    assert keys(out, "[frontendPort:appGatewayFrontendPort443]") == ["port = 443"]
    assert keys(out, "[frontendPort:appGatewayFrontendPort80]") == ["port = 80"]
    # "FrontendPort": {"Id": ".../frontendPorts/appGatewayFrontendPort443'"}: debris and
    # capitalised keys are dealt with.
    assert keys(out, "[httpListener:appGatewayHttpsListener]") == [
        "frontendPort = appGatewayFrontendPort443",
        "protocol = Https",
        "sslCertificate = appGatewaySslCert1",
    ]
    assert keys(out, "[httpListener:appGatewayHttpListener]") == [
        "frontendPort = appGatewayFrontendPort80",
        "protocol = Http",
    ]
    assert (
        "; NOT CONVERTED: frontendIPConfiguration = DefaultFrontendPublicIP: "
        "agw listens on every address of this host"
    ) in sections(out)["[httpListener:appGatewayHttpsListener]"]


def test_articleRules(capsys: pytest.CaptureFixture[str]) -> None:
    out = imported(capsys, ARTICLE)
    assert keys(out, "[requestRoutingRule:rule1]") == [
        "ruleType = Basic",
        "httpListener = appGatewayHttpsListener",
        "backendAddressPool = appGatewayBackendPool",
        "backendHttpSettings = appGatewayBackendHttpSettings",
    ]
    # The article's placeholder name '<ruleName2>' is not a valid agw name.
    rule2 = sections(out)["[requestRoutingRule:ruleName2]"]
    assert (
        "; Azure name '<ruleName2>' is not a valid agw name (1..80 of A-Z a-z 0-9 _ . -): "
        "renamed to 'ruleName2'"
    ) in rule2
    assert "httpListener = appGatewayHttpListener" in rule2
    assert "backendAddressPool = ContosoServerPool" in rule2
    assert keys(out, "[backendAddressPool:appGatewayBackendPool]") == [
        "backendAddresses = 10.0.1.4, 10.0.1.5"
    ]
    assert keys(out, "[backendHttpSettings:appGatewayBackendHttpSettings]") == [
        "port = 80",
        "protocol = Http",
        "cookieBasedAffinity = Disabled",
        "requestTimeout = 30",
    ]


def test_articleCertificatePlaceholders(capsys: pytest.CaptureFixture[str]) -> None:
    out = imported(capsys, ARTICLE)
    cert = sections(out)["[sslCertificate:appGatewaySslCert1]"]
    assert keys(out, "[sslCertificate:appGatewaySslCert1]") == [
        "certificate = /etc/agw/tls/appGatewaySslCert1.pem",
        "privateKey = /etc/agw/tls/appGatewaySslCert1.key",
    ]
    assert (
        "; NOT CONVERTED: data (an embedded PFX) and its password: "
        "agw reads PEM files; the PFX cannot be written from here"
    ) in cert
    assert any("openssl pkcs12" in line and "-nocerts" in line for line in cert)


def test_articleNotConvertedAtTheTop(capsys: pytest.CaptureFixture[str]) -> None:
    top = topComments(imported(capsys, ARTICLE))
    assert any(line.startswith("; NOT CONVERTED: sku = ") and "Standard_Medium" in line for line in top)
    assert any(
        line.startswith("; NOT CONVERTED: gatewayIPConfigurations = appGatewayIpConfig") for line in top
    )
    assert any(
        line.startswith(
            "; NOT CONVERTED: frontendIPConfigurations = DefaultFrontendPublicIP, appGatewayFrontendIP"
        )
        for line in top
    )
    assert "; ignored (Azure bookkeeping, nothing to convert): type, apiVersion, location" in top


# ---------------------------------------------------------------------------
# (b) a full template
# ---------------------------------------------------------------------------


def test_fullNotConvertedAtTheTop(capsys: pytest.CaptureFixture[str]) -> None:
    top = topComments(imported(capsys, FULL))
    assert (
        '; NOT CONVERTED: webApplicationFirewallConfiguration = {"enabled": true, '
        '"firewallMode": "Prevention", "ruleSetType": "OWASP", "ruleSetVersion": "3.2"}: '
        "agw has no web application firewall"
    ) in top
    for prefix in (
        '; NOT CONVERTED: sku = {"name": "WAF_v2"',
        "; NOT CONVERTED: autoscaleConfiguration = ",
        "; NOT CONVERTED: zones = ",
        "; NOT CONVERTED: identity = ",
        "; NOT CONVERTED: gatewayIPConfigurations = appGatewayIpConfig",
        "; NOT CONVERTED: frontendIPConfigurations = appGwPublicFrontendIp",
    ):
        assert any(line.startswith(prefix) for line in top), prefix


def test_fullSslPolicyBecomesGatewayKeys(capsys: pytest.CaptureFixture[str]) -> None:
    out = imported(capsys, FULL)
    assert keys(out, "[gateway]") == [
        "enableHttp2 = true",
        "sslPolicyType = Predefined",
        "sslPolicyName = AppGwSslPolicy20220101",
    ]
    assert "sslPolicy" not in "\n".join(topComments(out))


def test_oldApiVersionWithoutSslPolicyIsExplained(capsys: pytest.CaptureFixture[str]) -> None:
    gateway = sections(imported(capsys, ARTICLE))["[gateway]"]
    assert gateway == [
        "; no sslPolicy: Azure's default for apiVersion 2016-09-01 is AppGwSslPolicy20150501 (TLS 1.0 and "
        "up); agw's is AppGwSslPolicy20220101, Azure's from 2023-02-01 (TLS 1.2 and up). Add "
        "sslPolicyName = AppGwSslPolicy20150501 for old clients"
    ]


def test_fullListeners(capsys: pytest.CaptureFixture[str]) -> None:
    out = imported(capsys, FULL)
    assert keys(out, "[httpListener:httpListener]") == [
        "frontendPort = port_80",
        "protocol = Http",
        "hostNames = www.contoso.com, contoso.com",
    ]
    # Named by a variable; port and certificate referenced with resourceId().
    https = sections(out)["[httpListener:https-listener]"]
    assert keys(out, "[httpListener:https-listener]") == [
        "frontendPort = port_443",
        "protocol = Https",
        "hostNames = www.contoso.com, contoso.com",
        "sslCertificate = www-contoso-com",
    ]
    assert "; requireServerNameIndication = true: ignored, agw has no such setting" in https
    assert (
        "; NOT CONVERTED: firewallPolicy = -> Microsoft.Network/"
        "ApplicationGatewayWebApplicationFirewallPolicies/www-waf-policy: "
        "agw has no web application firewall"
    ) in https


def test_fullRedirects(capsys: pytest.CaptureFixture[str]) -> None:
    out = imported(capsys, FULL)
    assert keys(out, "[redirectConfiguration:httpToHttps]") == [
        "redirectType = Permanent",
        "targetListener = https-listener",
        "includePath = true",
        "includeQueryString = true",
    ]
    # Azure's includePath/includeQueryString default to false: written out.
    assert keys(out, "[redirectConfiguration:oldSite]") == [
        "redirectType = Found",
        "targetUrl = https://archive.contoso.com/",
        "includePath = false",
        "includeQueryString = false",
    ]
    assert keys(out, "[requestRoutingRule:httpRedirectRule]") == [
        "ruleType = Basic",
        "priority = 100",
        "httpListener = httpListener",
        "redirectConfiguration = httpToHttps",
    ]


def test_fullPathMapAndRule(capsys: pytest.CaptureFixture[str]) -> None:
    out = imported(capsys, FULL)
    pathMap = sections(out)["[urlPathMap:siteMap]"]
    assert keys(out, "[urlPathMap:siteMap]") == [
        "defaultBackendAddressPool = webPool",
        "defaultBackendHttpSettings = webSettings",
        "pathRule.images = /images/*, /img/* -> Image_Pool_v2, imageSettings",
        "pathRule.old_site = /old/* -> redirect:oldSite",
    ]
    assert "; path rule 'old site' is named 'old_site' here" in pathMap
    # Every path rule and the default use the same rewrite set: it moves to the rule.
    assert keys(out, "[requestRoutingRule:httpsPathRule]") == [
        "ruleType = PathBasedRouting",
        "priority = 200",
        "httpListener = https-listener",
        "urlPathMap = siteMap",
        "rewriteRuleSet = securityHeaders",
    ]


def test_fullPoolsProbesSettings(capsys: pytest.CaptureFixture[str]) -> None:
    out = imported(capsys, FULL)
    web = sections(out)["[backendAddressPool:webPool]"]
    assert "backendAddresses = 10.0.1.4, 10.0.1.5" in web
    assert (
        "; NOT CONVERTED: backend address [parameters('legacyServerFqdn')]: "
        "parameter 'legacyServerFqdn' has no defaultValue (pass --parameters FILE)"
    ) in web
    images = sections(out)["[backendAddressPool:Image_Pool_v2]"]
    assert "backendAddresses = images.contoso.internal" in images
    assert any("'Image Pool (v2)'" in line for line in images)

    probe = sections(out)["[probe:webProbe]"]
    assert keys(out, "[probe:webProbe]") == [
        "protocol = Http",
        "host = 127.0.0.1",
        "path = /healthz",
        "interval = 15",
        "timeout = 10",
        "unhealthyThreshold = 3",
        "match.statusCodes = 200-399, 401",
        "match.body = ok",
    ]
    assert "; NOT CONVERTED: minServers = 1: agw has no minimum healthy-member count for probes" in probe
    assert "pickHostNameFromBackendHttpSettings = true" in keys(out, "[probe:imageProbe]")

    assert keys(out, "[backendHttpSettings:webSettings]") == [
        "port = 80",
        "protocol = Http",
        "cookieBasedAffinity = Enabled",
        "affinityCookieName = ContosoAffinity",
        "requestTimeout = 45",
        "probe = webProbe",
        "connectionDraining = 60",
    ]
    assert keys(out, "[backendHttpSettings:imageSettings]") == [
        "port = 443",
        "protocol = Https",
        "cookieBasedAffinity = Disabled",
        "requestTimeout = 20",
        "pickHostNameFromBackendAddress = true",
        "probe = imageProbe",
        "connectionDraining = 0",
        "path = /static/",
        "trustedRootCertificates = contosoInternalRoot",
    ]


def test_fullRewriteRuleSet(capsys: pytest.CaptureFixture[str]) -> None:
    out = imported(capsys, FULL)
    rewrite = sections(out)["[rewriteRuleSet:securityHeaders]"]
    # Ordered by ruleSequence: 'client ip' (100), category (150), hsts (200), fixLocation (300).
    assert keys(out, "[rewriteRuleSet:securityHeaders]") == [
        "rule.client_ip.condition = {var_uri_path} !~* ^/admin",
        "rule.client_ip.requestHeader.X-Client-Ip = {var_client_ip}:{var_client_port}",
        "rule.client_ip.requestHeader.X-Forwarded-For = {var_add_x_forwarded_for_proxy}",
        "rule.client_ip.modifiedPath = /new{var_uri_path}",
        "rule.category.condition = {var_query_string} ~ category=(\\w+)",
        "rule.category.modifiedPath = /listing/{var_query_string_1}",
        "rule.category.modifiedQueryString =",
        "rule.category.reroute = true",
        "rule.hsts.responseHeader.Strict-Transport-Security = max-age=31536000",
        "rule.hsts.responseHeader.Server =",
        "rule.fixLocation.condition = {http_resp_Location} ~* (https?):\\/\\/.*azurewebsites\\.net(.*)$",
        "rule.fixLocation.responseHeader.Location = {http_resp_Location_1}://www.contoso.com{http_resp_Location_2}",
    ]
    for expected in (
        "; NOT CONVERTED: rewrite rule 'unsupported': requestHeader X-Sent: agw has no variable {var_sent_bytes}",
        (
            "; NOT CONVERTED: rewrite rule 'unsupported': modifiedPath = /x/{var_uri_path_1}: "
            "{var_uri_path_1} is a capture from a condition on {var_uri_path}, which this rule does not have"
        ),
        "; NOT CONVERTED: rewrite rule 'unsupported': none of its actions could be converted",
    ):
        assert expected in rewrite


def test_rewriteConditionTheLoaderWouldRefuse() -> None:
    """A condition is checked as the loader checks it: a bad pattern drops the rule, said so."""
    template = json.loads(FULL.read_text().replace("^/admin", "^/adm(in"))
    rewrite = sections(convert(template, "full.json"))["[rewriteRuleSet:securityHeaders]"]
    assert (
        '; NOT CONVERTED: rewrite rule \'client ip\' (condition {"variable": "var_uri_path", '
        '"pattern": "^/adm(in", "ignoreCase": true, "negate": true}): pattern \'^/adm(in\' is not a '
        "valid regular expression: missing ), unterminated subpattern at position 5"
    ) in rewrite
    assert not any(line.startswith("rule.client_ip.") for line in rewrite)
    assert "rule.hsts.responseHeader.Strict-Transport-Security = max-age=31536000" in rewrite


def test_fullCertificates(capsys: pytest.CaptureFixture[str]) -> None:
    out = imported(capsys, FULL)
    cert = sections(out)["[sslCertificate:www-contoso-com]"]
    assert (
        "; NOT CONVERTED: keyVaultSecretId = https://contoso-kv.vault.azure.net/secrets/www-contoso-com: "
        "agw reads PEM files, not Key Vault secrets"
    ) in cert
    assert any(line.startswith(";   az keyvault secret download --id https://contoso-kv") for line in cert)
    assert keys(out, "[trustedRootCertificate:contosoInternalRoot]") == [
        "certificate = /etc/agw/tls/contosoInternalRoot.crt"
    ]
    # Certificate data is never copied into the output.
    assert "MIIBszCC" not in out


def runImport(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """C{python -m agwtx.tools.armimport ARGS} in its own process (the real command)."""
    return subprocess.run(
        [sys.executable, "-m", "agwtx.tools.armimport", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )


def test_fullIsDeterministic(capsys: pytest.CaptureFixture[str]) -> None:
    """The same output in processes with different string hashing (set and dict order)."""
    expected = imported(capsys, FULL)
    assert expected.endswith("\n") and not expected.endswith("\n\n")
    for seed in ("1", "2"):
        result = runImport(str(FULL), env={**os.environ, "PYTHONHASHSEED": seed})
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout == expected


def test_parametersFile(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    params = tmp_path / "full.parameters.json"
    params.write_text(
        json.dumps(
            {
                "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
                "parameters": {
                    "legacyServerFqdn": {"value": "Legacy.Contoso.Internal"},
                    "siteHostName": {"value": "shop.contoso.com"},
                },
            }
        )
    )
    out = imported(capsys, FULL, "--parameters", str(params))
    assert keys(out, "[backendAddressPool:webPool]") == [
        "backendAddresses = 10.0.1.4, 10.0.1.5, legacy.contoso.internal"
    ]
    assert "hostNames = shop.contoso.com, contoso.com" in keys(out, "[httpListener:https-listener]")


def test_tlsDirAndOutputFile(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "gw.ini"
    rc, out, err = runMain(capsys, "--tls-dir", "/srv/tls/", "-o", str(target), str(ARTICLE))
    assert (rc, out, err) == (0, "", "")
    text = target.read_text()
    assert "certificate = /srv/tls/appGatewaySslCert1.pem" in text
    assert "privateKey = /srv/tls/appGatewaySslCert1.key" in text


# ---------------------------------------------------------------------------
# (c) az CLI output, ids as /subscriptions/... paths
# ---------------------------------------------------------------------------


def test_azShow(capsys: pytest.CaptureFixture[str]) -> None:
    out = imported(capsys, AZ_SHOW)
    assert "; Azure application gateway: myAppGateway (az CLI / REST JSON, the az CLI object)" in out
    assert keys(out, "[httpListener:chatListener]") == [
        "frontendPort = port_443",
        "protocol = Https",
        "hostNames = chat.contoso.com",
        "sslCertificate = chatCert",
    ]
    assert keys(out, "[requestRoutingRule:chatRule]") == [
        "ruleType = Basic",
        "priority = 110",
        "httpListener = chatListener",
        "backendAddressPool = myBackendPool",
        "backendHttpSettings = myHTTPSetting",
    ]
    assert keys(out, "[backendHttpSettings:myHTTPSetting]") == [
        "port = 80",
        "protocol = Http",
        "cookieBasedAffinity = Disabled",
        "requestTimeout = 30",
        "probe = myProbe",
        "connectionDraining = 120",
    ]
    pool = sections(out)["[backendAddressPool:myBackendPool]"]
    assert "backendAddresses = 10.0.2.4, app2.contoso.internal" in pool
    assert (
        "; NOT CONVERTED: backendIPConfigurations = Microsoft.Network/networkInterfaces/vm3-nic/"
        "ipConfigurations/ipconfig1: members that are NICs or VM scale set instances; add their "
        "addresses to backendAddresses by hand"
    ) in pool
    assert (
        "; NOT CONVERTED: publicCertData: Azure never returns the private key; use the PFX that was uploaded"
    ) in sections(out)["[sslCertificate:chatCert]"]
    top = topComments(out)
    assert any(line.startswith("; NOT CONVERTED: sku = ") for line in top)
    assert any(line.startswith("; NOT CONVERTED: autoscaleConfiguration = ") for line in top)
    assert any(line.startswith("; ignored (Azure bookkeeping") and "operationalState" in line for line in top)
    # Empty collections and false flags are nothing to report.
    assert "sslProfiles" not in out and "enableHttp2" not in out
    assert "requireServerNameIndication" not in "\n".join(sections(out)["[httpListener:myListener]"])


def test_azResourceShowAndList(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """C{az resource show} nests the properties; C{az ... list} gives a list."""
    flat = json.loads(AZ_SHOW.read_text())
    outerKeys = ("id", "name", "type", "location", "tags", "etag", "resourceGroup")
    nested = {k: flat[k] for k in outerKeys}
    nested["properties"] = {k: v for k, v in flat.items() if k not in outerKeys}
    expected = sections(imported(capsys, AZ_SHOW))

    (tmp_path / "nested.json").write_text(json.dumps(nested))
    assert sections(imported(capsys, tmp_path / "nested.json")) == expected

    other = dict(flat, name="otherGateway")
    (tmp_path / "list.json").write_text(json.dumps([other, flat]))
    rc, out, err = runMain(capsys, str(tmp_path / "list.json"))
    assert rc == 1 and out == ""
    assert "2 application gateways found (otherGateway, myAppGateway); choose one with --gateway NAME" in err
    chosen = imported(capsys, tmp_path / "list.json", "--gateway", "myappgateway")
    assert sections(chosen) == expected


# ---------------------------------------------------------------------------
# ARM expressions and references
# ---------------------------------------------------------------------------


def test_expressions() -> None:
    template = {
        "parameters": {
            "gw": {"type": "string", "defaultValue": "gw1"},
            "noDefault": {"type": "string"},
            "ports": {"type": "object", "defaultValue": {"http": 80}},
        },
        "variables": {
            "gwId": "[resourceId('Microsoft.Network/applicationGateways', parameters('gw'))]",
            "prefix": "[toLower('WEB')]",
        },
    }
    arm = ArmEvaluator(template, {})
    assert arm.string("[concat(variables('prefix'), '-', parameters('gw'))]") == "web-gw1"
    assert arm.string("[parameters('ports').http]") == 80
    assert arm.string("[format('{0}/{1}', 'a', 2)]") == "a/2"
    assert arm.string("[if(equals(parameters('gw'), 'gw1'), 'yes', 'no')]") == "yes"
    assert arm.string("[[not an expression]") == "[not an expression]"
    ident = arm.string("[concat(variables('gwId'), '/httpListeners/l1')]")
    assert ident.endswith("/providers/Microsoft.Network/applicationGateways/gw1/httpListeners/l1")
    child = arm.string(
        "[resourceId('Microsoft.Network/applicationGateways/httpListeners', parameters('gw'), 'NAME')]"
    )
    assert child.endswith("/applicationGateways/gw1/httpListeners/NAME")
    assert arm.string("[resourceId('sub', 'rg', 'Microsoft.Network/applicationGateways', 'x')]") == (
        "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Network/applicationGateways/x"
    )
    # Unknown: kept as an unresolved part, never a crash.
    assert "\x00" in arm.string("[parameters('noDefault')]")
    assert "\x00" in arm.string("[someFunction('x')]")
    assert "\x00" in arm.string("[concat('a']")
    assert arm.string("[concat('a'") == "[concat('a'"  # no closing bracket: a literal


def test_referencesByExpression() -> None:
    """Names from ids: full ids, concat(), resourceId() with parameters, unevaluable expressions."""
    listenerIds = [
        "[concat(variables('applicationGatewayID'), '/httpListeners/l1')]",
        "[resourceId('Microsoft.Network/applicationGateways/httpListeners', parameters('gw'), 'l2')]",
        "[resourceId('Microsoft.Network/applicationGateways/httpListeners', parameters('gw'), parameters('l3'))]",
        "[unknownFunction('/httpListeners/l4')]",
    ]
    listeners = [
        {
            "name": name,
            "properties": {"frontendPort": {"id": "/x/frontendPorts/p"}, "protocol": "Http"},
        }
        for name in ("l1", "l2", "[parameters('l3')]", "l4")
    ]
    template = {
        "parameters": {"gw": {"type": "string"}, "l3": {"type": "string"}},
        "variables": {
            "applicationGatewayID": "[resourceId('Microsoft.Network/applicationGateways', parameters('gw'))]"
        },
        "resources": [
            {
                "type": "Microsoft.Network/applicationGateways",
                "name": "[parameters('gw')]",
                "properties": {
                    "frontendPorts": [{"name": "p", "properties": {"port": 8080}}],
                    "backendAddressPools": [{"name": "pool"}],
                    "backendHttpSettingsCollection": [{"name": "s", "properties": {"port": 80}}],
                    "httpListeners": listeners,
                    "requestRoutingRules": [
                        {
                            "name": f"r{i + 1}",
                            "properties": {
                                "ruleType": "Basic",
                                "httpListener": {"id": ident},
                                "backendAddressPool": {"id": "/x/backendAddressPools/pool"},
                                "backendHttpSettings": {"id": "/x/backendHttpSettingsCollection/s"},
                            },
                        }
                        for i, ident in enumerate(listenerIds)
                    ],
                },
            }
        ],
    }
    out = convert(template, "t.json")
    for i, listener in enumerate(("l1", "l2", "l3", "l4")):
        assert f"httpListener = {listener}" in keys(out, f"[requestRoutingRule:r{i + 1}]")
        assert f"[httpListener:{listener}]" in sections(out)
    assert "; name: the name stands in for parameter 'l3': parameter 'l3' has no defaultValue" in "\n".join(
        sections(out)["[httpListener:l3]"]
    )
    assert any(
        "the name was taken from its last quoted string" in line
        for line in sections(out)["[requestRoutingRule:r4]"]
    )
    assert "; Azure application gateway: [parameters('gw')]" in out


def test_sectionsThatCannotWorkAreCommentedOut() -> None:
    gateway = {
        "name": "gw",
        "frontendPorts": [{"name": "p", "port": 8080}],
        "backendAddressPools": [{"name": "pool", "backendAddresses": [{"ipAddress": "10.0.0.1"}]}],
        "backendHttpSettingsCollection": [{"name": "s", "port": 80, "protocol": "Http"}],
        "httpListeners": [
            {"name": "used", "frontendPort": {"id": "/gw/frontendPorts/p"}, "protocol": "Http"},
            {
                "name": "unused",
                "frontendPort": {"id": "/gw/frontendPorts/p"},
                "hostNames": ["a.example"],
            },
        ],
        "requestRoutingRules": [
            {
                "name": "ok",
                "ruleType": "Basic",
                "httpListener": {"id": "/gw/httpListeners/used"},
                "backendAddressPool": {"id": "/gw/backendAddressPools/pool"},
                "backendHttpSettings": {"id": "/gw/backendHttpSettingsCollection/s"},
            },
            {
                "name": "dangling",
                "ruleType": "Basic",
                "httpListener": {"id": "/gw/httpListeners/unused"},
                "backendAddressPool": {"id": "/gw/backendAddressPools/nosuchpool"},
                "backendHttpSettings": {"id": "/gw/backendHttpSettingsCollection/s"},
            },
        ],
    }
    out = convert(gateway, "gw.json")
    assert "[requestRoutingRule:ok]" in sections(out)
    assert "[requestRoutingRule:dangling]" not in sections(out)
    assert (
        "; NOT CONVERTED: [requestRoutingRule:dangling]: its backendAddressPool refers to "
        "backendAddressPool 'nosuchpool', which is not in the input"
    ) in out
    assert "; [requestRoutingRule:dangling]" in out
    assert (
        "; NOT CONVERTED: [httpListener:unused]: no converted requestRoutingRule uses it "
        "(agw needs a rule for every listener)"
    ) in out


def test_lenientJson() -> None:
    data, lenient = loadJson('{"a": [1, 2,], // comment\n "b": "x // not a comment", /* c */}')
    assert lenient and data == {"a": [1, 2], "b": "x // not a comment"}
    assert loadJson('{"a": 1}') == ({"a": 1}, False)
    with pytest.raises(ArmImportError, match="not valid JSON"):
        loadJson("{'a': 1}")


def test_findGateways() -> None:
    nested = {
        "resources": [
            {"type": "Microsoft.Network/virtualNetworks", "name": "vnet"},
            {
                "type": "Microsoft.Resources/deployments",
                "name": "inner",
                "properties": {
                    "template": {
                        "resources": [
                            {
                                "type": "Microsoft.Network/applicationGateways",
                                "name": "g",
                                "properties": {},
                            }
                        ]
                    }
                },
            },
        ]
    }
    [found] = findGateways(nested)
    assert found.where == "resources[1].properties.template.resources[0]"
    bicep = {
        "languageVersion": "2.0",
        "resources": {"agw": {"type": "Microsoft.Network/applicationGateways", "name": "g"}},
    }
    assert [g.where for g in findGateways(bicep)] == ["resources.agw"]
    assert findGateways({"resources": []}) == []
    assert findGateways([1, "x"]) == []


# ---------------------------------------------------------------------------
# (d) bad input: a message on stderr, exit status 1, no traceback
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        # The decoder's own words differ between CPython and PyPy; the place does not.
        ("this is not json\n", r"not valid JSON: .+ at line 1 column [12]\n"),
        ("", "the input is empty"),
        (
            '{"resources": [{"type": "Microsoft.Storage/storageAccounts", "name": "s"}]}',
            "no application gateway found",
        ),
        ('{"hello": "world"}', "no application gateway found"),
        ("[1, 2, 3]", "no application gateway found"),
        (
            '{"type": "Microsoft.Network/applicationGateways", "name": "empty", "properties": {}}',
            "has nothing to convert",
        ),
    ],
)
def test_badInput(capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "input.json"
    path.write_text(content)
    rc, out, err = runMain(capsys, str(path))
    assert rc == 1
    assert out == ""
    assert err.startswith(f"agw-import-arm: error: {path}: ")
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert err.count("\n") == 1


def test_missingFile(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = runMain(capsys, str(tmp_path / "nope.json"))
    assert (rc, out) == (1, "")
    assert (
        err
        == f"agw-import-arm: error: {tmp_path / 'nope.json'}: cannot read the file: No such file or directory\n"
    )


def test_badInputInAProcess(tmp_path: Path) -> None:
    """The real command: no traceback reaches the terminal."""
    path = tmp_path / "template.json"
    path.write_text("<html>not json</html>")
    result = runImport(str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("agw-import-arm: error: ")
    assert "Traceback" not in result.stderr

    ok = runImport("-", input=AZ_SHOW.read_text())
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("; agw configuration imported by agw-import-arm from <stdin>\n")


# ---------------------------------------------------------------------------
# (e) the result is a configuration agw accepts
# ---------------------------------------------------------------------------


def _importAndLoad(capsys: pytest.CaptureFixture[str], tmp_path: Path, source: Path) -> GatewayConfig:
    tls = tmp_path / "tls"
    tls.mkdir()
    text = imported(capsys, source, "--tls-dir", str(tls))
    ini = tmp_path / "gw.ini"
    ini.write_text(text)
    # Put dummy certificates where the placeholders point.
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    for section in parser.sections():
        if section.startswith("sslCertificate:"):
            issued = selfSigned(["localhost"])
            Path(parser[section]["certificate"]).write_bytes(certPem(issued.cert))
            Path(parser[section]["privateKey"]).write_bytes(keyPem(issued.key))
        elif section.startswith("trustedRootCertificate:"):
            CA().writeRoot(Path(parser[section]["certificate"]))
        elif section.startswith("trustedClientCertificate:"):
            CA().writeRoot(Path(parser[section]["data"]))
    return loadConfig(ini)


GW = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/applicationGateways/gw"
TLS_GATEWAY = {
    "name": "gw",
    "apiVersion": "2024-05-01",
    "properties": {
        "sslPolicy": {
            "policyType": "Custom",
            "minProtocolVersion": "TLSv1_1",
            "cipherSuites": ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"],
        },
        "frontendPorts": [{"name": "p443", "properties": {"port": 443}}],
        "sslCertificates": [{"name": "cert", "properties": {"data": "MIIb", "password": "x"}}],
        "trustedClientCertificates": [{"name": "clientCA", "properties": {"data": "LS0tLS1CRUdJTi"}}],
        "sslProfiles": [
            {
                "name": "mtls",
                "properties": {
                    "sslPolicy": {"policyType": "CustomV2", "minProtocolVersion": "TLSv1_3"},
                    "clientAuthConfiguration": {
                        "verifyClientCertIssuerDN": True,
                        "verifyClientRevocation": "OCSP",
                    },
                    "trustedClientCertificates": [{"id": f"{GW}/trustedClientCertificates/clientCA"}],
                },
            },
            {
                "name": "pass",
                "properties": {
                    "sslPolicy": {"policyType": "Predefined", "policyName": "AppGwSslPolicy20220101S"},
                    "clientAuthConfiguration": {"verifyClientAuthMode": "Passthrough"},
                },
            },
            {
                "name": "weird",
                "properties": {"sslPolicy": {"policyType": "Custom", "cipherSuites": ["NOPE"]}},
            },
        ],
        "httpListeners": [
            {
                "name": name,
                "properties": {
                    "frontendPort": {"id": f"{GW}/frontendPorts/p443"},
                    "protocol": "Https",
                    "hostNames": [f"{name}.example"],
                    "sslCertificate": {"id": f"{GW}/sslCertificates/cert"},
                    "sslProfile": {"id": f"{GW}/sslProfiles/{name}"},
                },
            }
            for name in ("mtls", "pass")
        ],
        "backendAddressPools": [
            {"name": "pool", "properties": {"backendAddresses": [{"ipAddress": "10.0.0.1"}]}}
        ],
        "backendHttpSettingsCollection": [{"name": "s", "properties": {"port": 80, "protocol": "Http"}}],
        "requestRoutingRules": [
            {
                "name": f"r-{name}",
                "properties": {
                    "ruleType": "Basic",
                    "priority": priority,
                    "httpListener": {"id": f"{GW}/httpListeners/{name}"},
                    "backendAddressPool": {"id": f"{GW}/backendAddressPools/pool"},
                    "backendHttpSettings": {"id": f"{GW}/backendHttpSettingsCollection/s"},
                },
            }
            for priority, name in ((10, "mtls"), (20, "pass"))
        ],
    },
}


def test_sslPolicyProfilesAndTrustedClientCertificates(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = convert(TLS_GATEWAY, "gw.json", tlsDir="/tls")
    assert keys(out, "[gateway]") == [
        "sslPolicyType = Custom",
        "sslMinProtocolVersion = TLSv1_1",
        "sslCipherSuites = TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    ]
    assert keys(out, "[trustedClientCertificate:clientCA]") == ["data = /tls/clientCA.ca.pem"]
    assert keys(out, "[sslProfile:mtls]") == [
        "sslPolicyType = CustomV2",
        "sslMinProtocolVersion = TLSv1_3",
        "trustedClientCertificates = clientCA",
        "verifyClientCertIssuerDN = true",
        "verifyClientRevocation = OCSP",
    ]
    assert keys(out, "[sslProfile:pass]") == [
        "sslPolicyType = Predefined",
        "sslPolicyName = AppGwSslPolicy20220101S",
        "verifyClientAuthMode = Passthrough",
    ]
    assert keys(out, "[sslProfile:weird]") == []
    assert "; NOT CONVERTED: sslPolicy.cipherSuites: NOPE: not a cipher suite Azure knows" in out
    assert "sslProfile = mtls" in keys(out, "[httpListener:mtls]")
    assert "sslProfile = pass" in keys(out, "[httpListener:pass]")
    assert not any("sslPolicy" in line or "sslProfiles" in line for line in topComments(out))
    # And agw loads it (certificates put where the placeholders point).
    source = tmp_path / "gw.json"
    source.write_text(json.dumps(TLS_GATEWAY))
    config = _importAndLoad(capsys, tmp_path, source)
    assert config.gateway.sslPolicy.minProtocolVersion == "TLSv1_1"
    profile = config.sslProfiles["mtls"]
    assert (profile.trustedClientCertificates, profile.verifyClientCertIssuerDN) == (("clientCA",), True)
    assert profile.verifyClientRevocation == "OCSP"
    assert config.sslProfiles["pass"].verifyClientAuthMode == "Passthrough"
    assert config.httpListeners["mtls"].sslProfile == "mtls"


def test_articleLoads(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    gateway = _importAndLoad(capsys, tmp_path, ARTICLE)
    listeners = gateway.httpListeners
    assert listeners["appGatewayHttpsListener"].protocol == "Https"
    assert listeners["appGatewayHttpsListener"].sslCertificate == "appGatewaySslCert1"
    rules = gateway.requestRoutingRules
    assert set(rules) == {"rule1", "ruleName2"}
    assert rules["rule1"].backendAddressPool == "appGatewayBackendPool"
    assert gateway.frontendPorts["appGatewayFrontendPort80"].port == 80


def test_fullLoads(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    gateway = _importAndLoad(capsys, tmp_path, FULL)
    rule = gateway.requestRoutingRules["httpsPathRule"]
    assert (rule.ruleType, rule.urlPathMap, rule.rewriteRuleSet) == (
        "PathBasedRouting",
        "siteMap",
        "securityHeaders",
    )
    pathMap = gateway.urlPathMaps["siteMap"]
    assert [r.paths for r in pathMap.pathRules] == [("/images/*", "/img/*"), ("/old/*",)]
    assert pathMap.pathRules[1].redirectConfiguration == "oldSite"
    redirect = gateway.redirectConfigurations["httpToHttps"]
    assert (redirect.redirectType, redirect.targetListener) == ("Permanent", "https-listener")
    rewrite = gateway.rewriteRuleSets["securityHeaders"]
    assert [r.name for r in rewrite.rules] == ["client_ip", "category", "hsts", "fixLocation"]
    category = rewrite.rules[1]
    assert (category.modifiedPath, category.modifiedQueryString, category.reroute) == (
        "/listing/{var_query_string_1}",
        "",
        True,
    )
    settings = gateway.backendHttpSettings["webSettings"]
    assert (settings.connectionDraining, settings.cookieBasedAffinity, settings.probe) == (
        60.0,
        True,
        "webProbe",
    )
    assert gateway.probes["webProbe"].statusCodes == ((200, 399), (401, 401))


def test_azShowLoads(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    gateway = _importAndLoad(capsys, tmp_path, AZ_SHOW)
    assert gateway.httpListeners["chatListener"].hostNames == ("chat.contoso.com",)
    assert len(gateway.backendAddressPools["myBackendPool"].backendAddresses) == 2


def test_hostileKeyVaultSecretIdIsQuotedInTheSuggestedCommand(tmp_path: Path) -> None:
    """
    A keyVaultSecretId built to run a command when the suggested line is
    pasted into a shell stays one argument: the line, run by sh with a
    stand-in az, passes it verbatim and the injected command never runs.
    """
    import shlex

    marker = tmp_path / "pwned"
    hostile = f"https://kv.example/secrets/x$(touch {marker}); touch {marker}; `touch {marker}` '\""
    url = "https://contoso-kv.vault.azure.net/secrets/www-contoso-com"
    template = json.loads(FULL.read_text().replace(url, hostile.replace("\\", "\\\\").replace('"', '\\"')))
    cert = sections(convert(template, "full.json"))["[sslCertificate:www-contoso-com]"]
    line = next(ln for ln in cert if ln.startswith(";   az keyvault secret download"))[len(";   ") :]
    assert shlex.split(line)[5] == hostile
    fakeBin = tmp_path / "bin"
    fakeBin.mkdir()
    (fakeBin / "az").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$AZ_ARGS"\n')
    (fakeBin / "az").chmod(0o755)
    args = tmp_path / "args"
    env = {"PATH": f"{fakeBin}:/usr/bin:/bin", "AZ_ARGS": str(args)}
    subprocess.run(["sh", "-c", line], env=env, cwd=tmp_path, check=True, timeout=30)
    assert args.read_text().splitlines()[4] == hostile
    assert not marker.exists()
    for ln in cert:
        if ln.startswith(";   openssl"):
            assert shlex.split(ln[len(";   ") :])[0] == "openssl"


def test_customErrorConfigurations(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Azure fetches each page from a URL; agw reads a file: a note says where to download it and what to set."""
    flat = json.loads(AZ_SHOW.read_text())
    flat["customErrorConfigurations"] = [
        {"statusCode": "HttpStatus502", "customErrorPageUrl": "https://pages.contoso.com/502.html"},
        {"statusCode": "HttpStatus418", "customErrorPageUrl": "https://pages.contoso.com/418.html"},
    ]
    flat["httpListeners"][0]["customErrorConfigurations"] = [
        {"statusCode": "HttpStatus504", "customErrorPageUrl": "https://pages.contoso.com/l504.html"},
        {"statusCode": "HttpStatus403"},
    ]
    path = tmp_path / "pages.json"
    path.write_text(json.dumps(flat))
    out = imported(capsys, path)
    top = topComments(out)
    assert (
        "; NOT CONVERTED: download https://pages.contoso.com/502.html to /etc/agw/errorpages/gateway-502.html, "
        "then set in [gateway]: customErrorPage.502 = /etc/agw/errorpages/gateway-502.html"
    ) in top
    assert (
        "; NOT CONVERTED: customErrorConfigurations: statusCode = HttpStatus418: agw has custom pages for "
        "HttpStatus400, HttpStatus403, HttpStatus404, HttpStatus405, HttpStatus408, HttpStatus500, "
        "HttpStatus502, HttpStatus503, HttpStatus504"
    ) in top
    listener = sections(out)["[httpListener:myListener]"]
    assert (
        "; NOT CONVERTED: download https://pages.contoso.com/l504.html to /etc/agw/errorpages/myListener-504.html, "
        "then set in this section: customErrorPage.504 = /etc/agw/errorpages/myListener-504.html"
    ) in listener
    assert (
        "; NOT CONVERTED: customErrorConfigurations HttpStatus403: customErrorPageUrl = null: expected the page's URL"
    ) in listener
    assert "agw has no custom error pages" not in out


def test_loadDistributionPolicies(tmp_path: Path) -> None:
    """
    Azure's loadDistributionPolicies become [loadDistributionPolicy] sections
    (algorithm, targets with weightPerServer), and rules, path maps and path
    rules name them; what agw cannot take is noted; the result loads.
    """

    def ref(kind: str, name: str) -> dict[str, str]:
        return {"id": f"/subscriptions/x/applicationGateways/gw/{kind}/{name}"}

    def target(name: str, pool: str, weight: Any = None) -> dict[str, Any]:
        props: dict[str, Any] = {"backendAddressPool": ref("backendAddressPools", pool)}
        if weight is not None:
            props["weightPerServer"] = weight
        return {"name": name, "properties": props}

    gateway = {
        "name": "gw",
        "frontendPorts": [{"name": "p", "port": 8080}],
        "backendAddressPools": [
            {"name": "blue", "backendAddresses": [{"ipAddress": "10.0.0.1"}]},
            {"name": "green", "backendAddresses": [{"ipAddress": "10.0.0.2"}]},
        ],
        "backendHttpSettingsCollection": [{"name": "s", "port": 80, "protocol": "Http"}],
        "loadDistributionPolicies": [
            {
                "name": "spread",
                "properties": {
                    "loadDistributionAlgorithm": "LeastConnections",
                    "loadDistributionTargets": [target("b", "blue", 3), target("g", "green", 500)],
                },
            },
            {
                "name": "sticky",
                "properties": {
                    "loadDistributionAlgorithm": "iphash",
                    "loadDistributionTargets": [target("b", "blue")],
                },
            },
            {
                "name": "odd",
                "properties": {
                    "loadDistributionAlgorithm": "Random",
                    "loadDistributionTargets": [target("b", "blue")],
                },
            },
        ],
        "httpListeners": [
            {"name": "l1", "frontendPort": ref("frontendPorts", "p"), "protocol": "Http"},
            {
                "name": "l2",
                "frontendPort": ref("frontendPorts", "p"),
                "protocol": "Http",
                "hostNames": ["b.example"],
            },
        ],
        "urlPathMaps": [
            {
                "name": "m",
                "properties": {
                    "defaultLoadDistributionPolicy": ref("loadDistributionPolicies", "sticky"),
                    "defaultBackendHttpSettings": ref("backendHttpSettingsCollection", "s"),
                    "pathRules": [
                        {
                            "name": "api",
                            "properties": {
                                "paths": ["/api/*"],
                                "loadDistributionPolicy": ref("loadDistributionPolicies", "spread"),
                                "backendHttpSettings": ref("backendHttpSettingsCollection", "s"),
                            },
                        }
                    ],
                },
            }
        ],
        "requestRoutingRules": [
            {
                "name": "r1",
                "properties": {
                    "ruleType": "Basic",
                    "priority": 10,
                    "httpListener": ref("httpListeners", "l1"),
                    "loadDistributionPolicy": ref("loadDistributionPolicies", "spread"),
                    "backendHttpSettings": ref("backendHttpSettingsCollection", "s"),
                },
            },
            {
                "name": "r2",
                "properties": {
                    "ruleType": "PathBasedRouting",
                    "priority": 20,
                    "httpListener": ref("httpListeners", "l2"),
                    "urlPathMap": ref("urlPathMaps", "m"),
                },
            },
        ],
    }
    out = convert(gateway, "gw.json")
    found = sections(out)
    assert found["[loadDistributionPolicy:spread]"] == [
        "loadDistributionAlgorithm = LeastConnections",
        "target.b = blue, 3",
        "; NOT CONVERTED: target.g weightPerServer = 500: expected 1..100",
    ]
    assert found["[loadDistributionPolicy:sticky]"] == [
        "loadDistributionAlgorithm = IpHash",
        "target.b = blue",
    ]
    assert "[loadDistributionPolicy:odd]" not in found
    assert (
        "; NOT CONVERTED: [loadDistributionPolicy:odd]: loadDistributionAlgorithm Random is not one of "
        "RoundRobin, LeastConnections, IpHash"
    ) in out
    assert "loadDistributionPolicy = spread" in found["[requestRoutingRule:r1]"]
    assert "defaultLoadDistributionPolicy = sticky" in found["[urlPathMap:m]"]
    assert "pathRule.api = /api/* -> loadDistributionPolicy:spread, s" in found["[urlPathMap:m]"]
    assert "NOT CONVERTED: loadDistribution" not in out
    ini = tmp_path / "gw.ini"
    ini.write_text(out)
    config = loadConfig(ini)
    spread = config.loadDistributionPolicies["spread"]
    assert spread.loadDistributionAlgorithm == "LeastConnections"
    assert [(t.backendAddressPool, t.weightPerServer) for t in spread.targets] == [("blue", 3)]
    assert config.requestRoutingRules["r1"].loadDistributionPolicy == "spread"
    pathMap = config.urlPathMaps["m"]
    assert pathMap.defaultLoadDistributionPolicy == "sticky"
    assert pathMap.pathRules[0].loadDistributionPolicy == "spread"
