"""
Tests for L{agwtx.config.loader}: value parsers, every class of mistake with its
exact message, and whole configurations that must load.
"""

from __future__ import annotations

import functools
import os
import textwrap
from pathlib import Path

import pytest

from agwtx.config.errors import ConfigError, InvalidValue
from agwtx.config.loader import loadConfig, summarize
from agwtx.config.values import (
    EndpointInfo,
    parseBackendAddress,
    parseBackendAddresses,
    parseBool,
    parseByteSize,
    parseDnsName,
    parseDuration,
    parseEndpoint,
    parseHostNamePattern,
    parseInt,
    parseList,
    parseName,
    parsePathRule,
    parseProtocol,
    parseRewriteCondition,
    parseRewriteValue,
    parseStatusRanges,
    parseUrlPathPattern,
)
from agwtx.config.model import (
    BackendAddress,
    GatewayConfig,
    PathRule,
    RewriteRule,
    RewriteRuleSet,
)
from tests.certs import CA, certPem, keyPem

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


@pytest.fixture()
def inTmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path so configs load as plain C{gw.ini}, as messages show them."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@functools.cache
def _pki() -> tuple[bytes, bytes, bytes, bytes]:
    """
    A root CA and a leaf it issued, generated once: the leaf's PEM, its key
    in PEM, the same key encrypted with C{Azure123456!}, and the root's PEM.
    """
    ca = CA()
    leaf = ca.issue(["localhost", "127.0.0.1"])
    return (
        certPem(leaf.cert),
        keyPem(leaf.key),
        keyPem(leaf.key, "Azure123456!"),
        certPem(ca.cert),
    )


def writePki(
    directory: Path,
    cert: str = "cert.pem",
    key: str = "key.pem",
    root: str = "ca.pem",
    encrypted: bool = False,
) -> None:
    """Write real PEM files: the loader checks that certificates and keys load."""
    certBytes, keyBytes, encryptedKeyBytes, rootBytes = _pki()
    (directory / cert).write_bytes(certBytes)
    (directory / key).write_bytes(encryptedKeyBytes if encrypted else keyBytes)
    (directory / root).write_bytes(rootBytes)


def write(text: str, name: str = "gw.ini") -> str:
    Path(name).write_text(textwrap.dedent(text), encoding="utf-8")
    return name


def load(text: str) -> GatewayConfig:
    return loadConfig(write(text))


def errorsOf(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return info.value.errors


# A small valid configuration; table snippets are appended to it.  A snippet
# that starts without a section header adds keys to [requestRoutingRule:r1].
BASE = """\
[frontendPort:http]
port = 8080

[httpListener:l1]
frontendPort = http

[backendAddressPool:pool]
backendAddresses = 10.0.0.4

[backendHttpSettings:settings]
port = 80

[requestRoutingRule:r1]
httpListener = l1
backendAddressPool = pool
backendHttpSettings = settings
"""
BASE_LINES = BASE.count("\n")


def snippetErrors(snippet: str) -> list[str]:
    return errorsOf(BASE + textwrap.dedent(snippet))


def expand(expected: list[str]) -> list[str]:
    """C{@N: ...} means line N of the snippet, C{gw.ini:M: ...} an absolute line."""
    result = []
    for line in expected:
        if line.startswith("@"):
            number, rest = line[1:].split(":", 1)
            line = f"gw.ini:{BASE_LINES + int(number)}:{rest}"
        result.append(line)
    return result


_L2 = "[httpListener:l2]\nfrontendPort = http\nhostNames = b.example\n"
"""A second listener, for a second rule in a snippet."""

KINDS = (
    "backendAddressPool, backendHttpSettings, frontendPort, gateway, httpListener, "
    "loadDistributionPolicy, probe, redirectConfiguration, requestRoutingRule, rewriteRuleSet, sslCertificate, sslProfile, "
    "trustedClientCertificate, trustedRootCertificate, urlPathMap"
)
PROBE_KEYS = (
    "host, interval, match.body, match.statusCodes, path, pickHostNameFromBackendHttpSettings, "
    "port, protocol, timeout, unhealthyThreshold"
)
RULE_KEYS = (
    "backendAddressPool, backendHttpSettings, httpListener, loadDistributionPolicy, plugin, "
    "plugin.KEY, priority, redirectConfiguration, rewriteRuleSet, ruleType, urlPathMap"
)
REWRITE_KEYS = (
    "rule.NAME.condition, rule.NAME.condition.N, rule.NAME.modifiedPath, rule.NAME.modifiedQueryString, "
    "rule.NAME.requestHeader.HEADER, rule.NAME.reroute, rule.NAME.responseHeader.HEADER"
)
ENDPOINT = "expected a Twisted endpoint string starting with tcp:, tcp6:, ssl:, unix: or systemd:"
VARIABLES = (
    "var_add_x_forwarded_for_proxy, var_ciphers_used, var_client_ip, var_client_port, var_client_user, "
    "var_host, var_http_method, var_http_status, var_http_version, var_query_string, var_request_query, "
    "var_request_scheme, var_request_uri, var_server_port, var_ssl_connection_protocol, "
    "var_ssl_enabled, var_uri_path, var_client_certificate, var_client_certificate_end_date, "
    "var_client_certificate_fingerprint, var_client_certificate_issuer, var_client_certificate_serial, "
    "var_client_certificate_start_date, var_client_certificate_subject, "
    "var_client_certificate_verification, var_cookie_<name>, http_req_<Header>, http_resp_<Header>"
)
HOST_PATTERN = (
    "expected a host name such as www.contoso.com or *.contoso.com (letters, digits, "
    "'-', '.' and the wildcards '*' and '?')"
)

# ---------------------------------------------------------------------------
# pure value parsers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("true", True),
        ("Yes", True),
        ("1", True),
        ("Enabled", True),
        ("FALSE", False),
        ("no", False),
        ("0", False),
        ("disabled", False),
    ],
)
def test_parseBool(text: str, expected: bool) -> None:
    assert parseBool(text) is expected


def test_parseBoolInvalid() -> None:
    with pytest.raises(InvalidValue) as info:
        parseBool("maybe")
    assert str(info.value) == ("expected true or false (or yes/no, 1/0, Enabled/Disabled), got 'maybe'")


@pytest.mark.parametrize(
    "text, lo, hi, expected",
    [
        ("1", 1, 20, 1),
        (" 20 ", 1, 20, 20),
        ("0", 0, 3600, 0),
    ],
)
def test_parseInt(text: str, lo: int, hi: int, expected: int) -> None:
    assert parseInt(text, lo, hi) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("0", "expected 1..20, got 0"),
        ("21", "expected 1..20, got 21"),
        ("-3", "expected 1..20, got -3"),
        ("3.5", "expected 1..20, got '3.5'"),
        ("three", "expected 1..20, got 'three'"),
    ],
)
def test_parseIntInvalid(text: str, message: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parseInt(text, 1, 20)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("30", 30.0),
        ("2.5", 2.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1 H", 3600.0),
    ],
)
def test_parseDuration(text: str, expected: float) -> None:
    assert parseDuration(text, 0, 86400) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("0", "expected 1..86400 seconds, got 0"),
        ("86401", "expected 1..86400 seconds, got 86401"),
        ("25h", "expected 1..86400 seconds, got 25h"),
        ("-1", "expected 1..86400 seconds, got '-1'"),
        ("soon", "expected 1..86400 seconds, got 'soon'"),
        ("1d", "expected 1..86400 seconds, got '1d'"),
    ],
)
def test_parseDurationInvalid(text: str, message: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parseDuration(text, 1, 86400)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0", 0),
        ("65536", 65536),
        ("64K", 65536),
        ("16m", 16 * 2**20),
        ("1G", 2**30),
        ("2 GiB", 2**31),
        ("1024G", 2**40),
    ],
)
def test_parseByteSize(text: str, expected: int) -> None:
    assert parseByteSize(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("1025G", "expected 0..1099511627776 bytes (suffixes K, M, G allowed), got 1025G"),
        ("1T", "expected 0..1099511627776 bytes (suffixes K, M, G allowed), got '1T'"),
        ("big", "expected 0..1099511627776 bytes (suffixes K, M, G allowed), got 'big'"),
    ],
)
def test_parseByteSizeInvalid(text: str, message: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parseByteSize(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", []),
        ("a", ["a"]),
        (" a , b,, c ,", ["a", "b", "c"]),
        ("a,\nb", ["a", "b"]),
    ],
)
def test_parseList(text: str, expected: list[str]) -> None:
    assert parseList(text) == expected


@pytest.mark.parametrize("text, expected", [("Http", "Http"), ("HTTPS", "Https"), ("http", "Http")])
def test_parseProtocol(text: str, expected: str) -> None:
    assert parseProtocol(text) == expected


def test_parseProtocolInvalid() -> None:
    with pytest.raises(InvalidValue) as info:
        parseProtocol("Htp")
    assert str(info.value) == "expected Http or Https, got 'Htp'"


@pytest.mark.parametrize("text", ["p1", "Contoso.Server-Pool_2", "x" * 80])
def test_parseName(text: str) -> None:
    assert parseName(text) == text


@pytest.mark.parametrize("text", ["", "a b", "x" * 81, "a:b", "caf\u00e9"])
def test_parseNameInvalid(text: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parseName(text)
    assert str(info.value) == (f"expected a name of 1..80 letters, digits, '_', '.' or '-', got {text!r}")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("200", ((200, 200),)),
        ("200-399", ((200, 399),)),
        ("200 - 204, 301, 404", ((200, 204), (301, 301), (404, 404))),
        ("100-599", ((100, 599),)),
    ],
)
def test_parseStatusRanges(text: str, expected: tuple[tuple[int, int], ...]) -> None:
    assert parseStatusRanges(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        (",", "expected status codes or ranges like 200, 200-399, got ','"),
        ("20x", "expected status codes or ranges like 200, 200-399 (100..599), got '20x'"),
        ("200-", "expected status codes or ranges like 200, 200-399 (100..599), got '200-'"),
        ("2000", "expected status codes or ranges like 200, 200-399 (100..599), got '2000'"),
        ("099", "expected status codes in 100..599, got '099'"),
        ("200-600", "expected status codes in 100..599, got '200-600'"),
        ("399-200", "expected a range low-high with low <= high, got '399-200'"),
    ],
)
def test_parseStatusRangesInvalid(text: str, message: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parseStatusRanges(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10.0.0.4", BackendAddress("10.0.0.4")),
        ("10.0.0.5:8080", BackendAddress("10.0.0.5", 8080)),
        ("App3.Internal", BackendAddress("app3.internal")),
        ("app3.internal.:81", BackendAddress("app3.internal.", 81)),
        ("my_service", BackendAddress("my_service")),
        ("[::1]", BackendAddress("::1")),
        ("[2001:DB8::0001]:8443", BackendAddress("2001:db8::1", 8443)),
        ("2001:db8::1", BackendAddress("2001:db8::1")),
    ],
)
def test_parseBackendAddress(text: str, expected: BackendAddress) -> None:
    assert parseBackendAddress(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("10.0.0.256", "expected an IP address or a DNS name, got '10.0.0.256'"),
        ("bad host", "expected an IP address or a DNS name, got 'bad host'"),
        ("a..b", "expected an IP address or a DNS name, got 'a..b'"),
        ("-a.example", "expected an IP address or a DNS name, got '-a.example'"),
        ("10.0.0.4:0", "expected a port 1..65535 after ':', got '10.0.0.4:0'"),
        ("10.0.0.4:", "expected a port 1..65535 after ':', got '10.0.0.4:'"),
        ("host:http", "expected a port 1..65535 after ':', got 'host:http'"),
        ("[10.0.0.4]:80", "expected an IPv6 address inside [...], got '[10.0.0.4]:80'"),
        ("[::1]80", "expected [IPv6] or [IPv6]:port, got '[::1]80'"),
        ("::1:x", "expected an IPv6 address (write [IPv6]:port to give a port), got '::1:x'"),
    ],
)
def test_parseBackendAddressInvalid(text: str, message: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parseBackendAddress(text)
    assert str(info.value) == message


def test_parseBackendAddresses() -> None:
    assert parseBackendAddresses("10.0.0.4, 10.0.0.5:8080, app3.internal") == (
        BackendAddress("10.0.0.4"),
        BackendAddress("10.0.0.5", 8080),
        BackendAddress("app3.internal"),
    )
    assert parseBackendAddresses("") == ()
    with pytest.raises(InvalidValue) as info:
        parseBackendAddresses("10.0.0.4, [::1]:80, 10.0.0.4")
    assert str(info.value) == "address '10.0.0.4' is listed twice"


@pytest.mark.parametrize(
    "text, expected",
    [("127.0.0.1", "127.0.0.1"), ("Api.Contoso.com", "api.contoso.com"), ("::1", "::1")],
)
def test_parseDnsName(text: str, expected: str) -> None:
    assert parseDnsName(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("www.contoso.com", "www.contoso.com"),
        ("*.Contoso.com", "*.contoso.com"),
        ("w??.contoso.com", "w??.contoso.com"),
        ("*contoso.com", "*contoso.com"),
        ("localhost", "localhost"),
    ],
)
def test_parseHostNamePattern(text: str, expected: str) -> None:
    assert parseHostNamePattern(text) == expected


@pytest.mark.parametrize("text", ["a..b", ".a", "a.", "a_b.com", "a b", "x" * 254])
def test_parseHostNamePatternInvalid(text: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parseHostNamePattern(text)
    assert str(info.value) == f"{HOST_PATTERN}, got {text!r}"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("tcp:80", EndpointInfo("tcp", 80)),
        ("tcp:port=8080:interface=127.0.0.1", EndpointInfo("tcp", 8080, "127.0.0.1")),
        ("tcp:8080:interface=127.0.0.1", EndpointInfo("tcp", 8080, "127.0.0.1")),
        ("tcp6:443:interface=\\:\\:1", EndpointInfo("tcp6", 443, "::1")),
        ("ssl:443:privateKey=key.pem", EndpointInfo("ssl", 443)),
        ("unix:/run/agw.sock", EndpointInfo("unix")),
        ("unix:address=/run/agw.sock:mode=660", EndpointInfo("unix")),
        ("systemd:domain=INET:index=0", EndpointInfo("systemd")),
    ],
)
def test_parseEndpoint(text: str, expected: EndpointInfo) -> None:
    assert parseEndpoint(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("udp:53", f"{ENDPOINT}, got 'udp:53'"),
        ("TCP:80", f"{ENDPOINT}, got 'TCP:80'"),
        ("8080", f"{ENDPOINT}, got '8080'"),
        ("tcp", f"{ENDPOINT}, got 'tcp'"),
        ("tcp:", "expected a port 1..65535, as in tcp:8080 or tcp:port=8080, got 'tcp:'"),
        ("tcp:0", "expected a port 1..65535, as in tcp:8080 or tcp:port=8080, got 'tcp:0'"),
        (
            "ssl:interface=::1",
            "expected a port 1..65535, as in ssl:8080 or ssl:port=8080, got 'ssl:interface=::1'",
        ),
        ("unix:", "expected a socket path, as in unix:/run/agw.sock, got 'unix:'"),
        ("systemd:", "expected systemd:domain=INET:index=N, got 'systemd:'"),
    ],
)
def test_parseEndpointInvalid(text: str, message: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parseEndpoint(text)
    assert str(info.value) == message


@pytest.mark.parametrize("text", ["/", "/images/*", "/images*", "/a/b.html", "/*"])
def test_parseUrlPathPattern(text: str) -> None:
    assert parseUrlPathPattern(text) == text


@pytest.mark.parametrize(
    "text, message",
    [
        ("images/*", "expected a path starting with '/', got 'images/*'"),
        ("/a b", "expected a path without spaces, got '/a b'"),
        ("/a/*/b", "expected '*' only at the end of a path, got '/a/*/b'"),
        ("/a**", "expected '*' only at the end of a path, got '/a**'"),
        (
            "/a?b=1",
            "expected a path without '?' or '#' (paths match without the query), got '/a?b=1'",
        ),
        (
            "/a#top",
            "expected a path without '?' or '#' (paths match without the query), got '/a#top'",
        ),
        ("/" + "a" * 1000, "expected at most 1000 characters, got 1001"),
    ],
)
def test_parseUrlPathPatternInvalid(text: str, message: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parseUrlPathPattern(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "/images/*, /img/* -> imagePool, imageSettings",
            PathRule("r", ("/images/*", "/img/*"), "imagePool", "imageSettings"),
        ),
        ("/old/* -> redirect:toNew", PathRule("r", ("/old/*",), redirectConfiguration="toNew")),
        ("/a->p,s", PathRule("r", ("/a",), "p", "s")),
        (
            "/api/* -> loadDistributionPolicy:spread, s",
            PathRule("r", ("/api/*",), backendHttpSettings="s", loadDistributionPolicy="spread"),
        ),
    ],
)
def test_parsePathRule(text: str, expected: PathRule) -> None:
    assert parsePathRule("r", text) == expected


RULE_HINT = (
    "'/path/*, ... -> POOL, SETTINGS', '/path/*, ... -> loadDistributionPolicy:NAME, SETTINGS' "
    "or '/path/*, ... -> redirect:NAME'"
)


@pytest.mark.parametrize(
    "text, message",
    [
        ("/images/* imagePool", f"expected {RULE_HINT}, got '/images/* imagePool'"),
        ("/a -> p -> s", f"expected {RULE_HINT}, got '/a -> p -> s'"),
        ("/a -> pool", f"expected {RULE_HINT}, got '/a -> pool'"),
        ("/a -> p, s, t", f"expected {RULE_HINT}, got '/a -> p, s, t'"),
        ("/a -> loadDistributionPolicy:, s", f"expected {RULE_HINT}, got '/a -> loadDistributionPolicy:, s'"),
        (" -> p, s", "expected at least one path before '->', got ' -> p, s'"),
        ("/a/*/b -> p, s", "expected '*' only at the end of a path, got '/a/*/b'"),
        ("/a, /A -> p, s", "path '/A' is listed twice"),
    ],
)
def test_parsePathRuleInvalid(text: str, message: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parsePathRule("r", text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{http_req_X-Foo} ~ ^abc$", ("http_req_X-Foo", "^abc$", False, False)),
        ("{var_uri_path} ~* ^/API", ("var_uri_path", "^/API", True, False)),
        ("{var_host} !~ \\.internal$", ("var_host", "\\.internal$", False, True)),
        ("{http_resp_Server} !~* apache httpd", ("http_resp_Server", "apache httpd", True, True)),
    ],
)
def test_parseRewriteCondition(text: str, expected: tuple[str, str, bool, bool]) -> None:
    assert parseRewriteCondition(text) == expected


CONDITION_HINT = "expected '{variable} OP pattern' with OP one of ~, ~*, !~, !~*"


@pytest.mark.parametrize(
    "text, message",
    [
        ("var_host ~ x", f"{CONDITION_HINT}, got 'var_host ~ x'"),
        ("{var_host} = x", f"{CONDITION_HINT}, got '{{var_host}} = x'"),
        ("{var_host} ~", f"{CONDITION_HINT}, got '{{var_host}} ~'"),
        ("{var_host} ~x", f"{CONDITION_HINT}, got '{{var_host}} ~x'"),
        ("{var_hots} ~ x", f"unknown variable 'var_hots'; expected one of: {VARIABLES}"),
        ("{http_req_} ~ x", f"unknown variable 'http_req_'; expected one of: {VARIABLES}"),
        (
            "{var_host} ~ (",
            (
                "pattern '(' is not a valid regular expression: "
                "missing ), unterminated subpattern at position 0"
            ),
        ),
    ],
)
def test_parseRewriteConditionInvalid(text: str, message: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parseRewriteCondition(text)
    assert str(info.value) == message


def test_parseRewriteValue() -> None:
    assert parseRewriteValue("{var_client_ip}:{var_client_port}", response=False) == (
        "{var_client_ip}:{var_client_port}"
    )
    assert parseRewriteValue("from {http_resp_Server}", response=True) == "from {http_resp_Server}"
    with pytest.raises(InvalidValue) as info:
        parseRewriteValue("{http_resp_Server}", response=False)
    assert str(info.value) == "variable 'http_resp_Server' is only available in response headers"
    with pytest.raises(InvalidValue) as info:
        parseRewriteValue("{client_ip}", response=False)
    assert str(info.value) == f"unknown variable 'client_ip'; expected one of: {VARIABLES}"


# ---------------------------------------------------------------------------
# reading the file
# ---------------------------------------------------------------------------


def test_baseLoads(inTmp: Path) -> None:
    """The table's base configuration is valid on its own."""
    config = load(BASE)
    assert list(config.requestRoutingRules) == ["r1"]


def test_missingFile(inTmp: Path) -> None:
    with pytest.raises(ConfigError) as info:
        loadConfig("etc/missing.ini")
    assert info.value.errors == [
        "etc/missing.ini: cannot read the configuration file: No such file or directory"
    ]
    assert str(info.value) == info.value.errors[0]


def test_directoryInsteadOfFile(inTmp: Path) -> None:
    os.mkdir("etc")
    with pytest.raises(ConfigError) as info:
        loadConfig("etc")
    assert info.value.errors == ["etc: cannot read the configuration file: Is a directory"]


def test_notUtf8(inTmp: Path) -> None:
    Path("gw.ini").write_bytes(b"[gateway]\nworkers = 1\nadmin = \xff\n")
    with pytest.raises(ConfigError) as info:
        loadConfig("gw.ini")
    assert info.value.errors == ["gw.ini:3: expected UTF-8 text: invalid start byte"]


def test_keyBeforeSection(inTmp: Path) -> None:
    assert errorsOf("port = 80\n[frontendPort:http]\nport = 81\n") == [
        "gw.ini:1: expected a [section] header before the first key, got 'port = 80'"
    ]


def test_pathLike(inTmp: Path) -> None:
    """A C{Path} works too; messages and the model use its text."""
    write(BASE)
    assert loadConfig(Path("gw.ini")).path == "gw.ini"


def test_errorPathAsGiven(tmp_path: Path) -> None:
    """Messages name the file exactly as it was given."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "gw.ini").write_text(BASE + "[probe:p1]\ninterval = 0\n")
    given = str(tmp_path / "etc" / "gw.ini")
    with pytest.raises(ConfigError) as info:
        loadConfig(given)
    assert info.value.errors == [
        f"{given}:{BASE_LINES + 2}: [probe:p1] interval: expected 1..86400 seconds, got 0"
    ]


def test_configErrorText() -> None:
    error = ConfigError(["a:1: one", "a:2: two"])
    assert error.errors == ["a:1: one", "a:2: two"]
    assert str(error) == "a:1: one\na:2: two"


# ---------------------------------------------------------------------------
# every class of mistake, with its exact message
# ---------------------------------------------------------------------------

MISTAKES: list[tuple[str, str, list[str]]] = [
    # --- file structure
    (
        "unknown section kind",
        "[frob:x]\na = 1\n",
        [f"@1: [frob:x]: unknown section kind 'frob'; expected one of: {KINDS}"],
    ),
    (
        "DEFAULT is not special",
        "[DEFAULT]\nport = 1\n",
        [f"@1: [DEFAULT]: unknown section kind 'DEFAULT'; expected one of: {KINDS}"],
    ),
    ("section without name", "[probe]\n", ["@1: [probe]: expected [probe:NAME]"]),
    ("section with empty name", "[probe:]\n", ["@1: [probe:]: expected [probe:NAME]"]),
    (
        "invalid name",
        "[probe:p 1]\n",
        ["@1: [probe:p 1]: expected a name of 1..80 letters, digits, '_', '.' or '-', got 'p 1'"],
    ),
    (
        "name too long",
        f"[probe:{'p' * 81}]\n",
        [
            (
                f"@1: [probe:{'p' * 81}]: expected a name of 1..80 letters, digits, '_', '.' or '-', "
                f"got '{'p' * 81}'"
            )
        ],
    ),
    (
        "gateway with a name",
        "[gateway:main]\n",
        ["@1: [gateway:main]: expected [gateway] without a name"],
    ),
    (
        "duplicate section",
        "[probe:p1]\n[probe:p1]\n",
        ["@2: [probe:p1]: duplicate name 'p1' (first defined at gw.ini:17)"],
    ),
    (
        "duplicate name in another spelling",
        "[probe:p1]\n[PROBE:P1]\n",
        ["@2: [PROBE:P1]: duplicate name 'P1' (first defined at gw.ini:17)"],
    ),
    (
        "duplicate gateway section",
        "[gateway]\n[gateway]\n",
        ["@2: [gateway]: duplicate section (first defined at gw.ini:17)"],
    ),
    (
        "duplicate key",
        "[probe:p1]\ninterval = 5\ninterval = 6\n",
        ["@3: [probe:p1] interval: duplicate key (first defined at gw.ini:18)"],
    ),
    (
        "duplicate key in another spelling",
        "[probe:p1]\ninterval = 5\nInterval = 6\n",
        ["@3: [probe:p1] Interval: duplicate key (first defined at gw.ini:18)"],
    ),
    ("line without a key", "[probe:p1]\njunk\n", ["@2: expected 'key = value', got 'junk'"]),
    ("empty key", "[probe:p1]\n= 5\n", ["@2: expected 'key = value', got '= 5'"]),
    (
        "text after a section header",
        "[probe:p1] interval = 5\n",
        ["@1: unexpected text after the section header: 'interval = 5'"],
    ),
    (
        "unknown key",
        "[probe:p1]\nintervall = 5\n",
        [f"@2: [probe:p1] intervall: unknown key 'intervall'; expected one of: {PROBE_KEYS}"],
    ),
    (
        "unknown key in a rule",
        "prority = 1\n",
        [f"@1: [requestRoutingRule:r1] prority: unknown key 'prority'; expected one of: {RULE_KEYS}"],
    ),
    (
        "indented key swallowed by the value above",
        "[probe:p1]\ninterval = 5\n  timeout = 0\n",
        [
            "@2: [probe:p1] interval: the indented line 'timeout = 0' continues this value; "
            "unindent it to make it a line of its own"
        ],
    ),
    (
        "indented section swallowed by a list",
        "[backendAddressPool:p2]\nbackendAddresses = [fd00::4],\n  [::1]:80\n  [probe:p1]\n",
        [
            "@2: [backendAddressPool:p2] backendAddresses: the indented line '[probe:p1]' continues "
            "this value; unindent it to make it a line of its own"
        ],
    ),
    (
        "single value over two lines",
        "[probe:p1]\npath = /health\n   z\n",
        ["@2: [probe:p1] path: expected a value on one line, got '/health\\nz'"],
    ),
    # --- [gateway]
    (
        "admin endpoint",
        "[gateway]\nadmin = http://localhost:9901\n",
        [f"@2: [gateway] admin: {ENDPOINT}, got 'http://localhost:9901'"],
    ),
    (
        "affinitySecret too short (and not echoed)",
        "[gateway]\naffinitySecret = hunter2\n",
        ["@2: [gateway] affinitySecret: expected at least 16 characters, got 7"],
    ),
    (
        "workers range",
        "[gateway]\nworkers = 0\n",
        ["@2: [gateway] workers: expected 1..64 or auto, got 0"],
    ),
    (
        "workers word",
        "[gateway]\nworkers = many\n",
        ["@2: [gateway] workers: expected 1..64 or auto, got 'many'"],
    ),
    (
        "accessLog relative path",
        "[gateway]\naccessLog = logs/access.log\n",
        ["@2: [gateway] accessLog: expected -, off, log or an absolute file path, got 'logs/access.log'"],
    ),
    (
        "accessLog missing directory",
        "[gateway]\naccessLog = /nonexistent-dir/access.log\n",
        ["@2: [gateway] accessLog: the directory /nonexistent-dir does not exist"],
    ),
    (
        "shutdownGracePeriod",
        "[gateway]\nshutdownGracePeriod = 2h\n",
        ["@2: [gateway] shutdownGracePeriod: expected 0..3600 seconds, got 2h"],
    ),
    (
        "requestHeaderTimeout",
        "[gateway]\nrequestHeaderTimeout = 0\n",
        ["@2: [gateway] requestHeaderTimeout: expected 1..3600 seconds, got 0"],
    ),
    (
        "admin beyond loopback without a token",
        "[gateway]\nadmin = tcp:9901\n",
        [
            "@2: [gateway] admin: the admin endpoint would be reachable on all interfaces without "
            "authentication; set adminToken = /path/to/token-file, or listen on loopback "
            "(interface=127.0.0.1) or a unix: socket"
        ],
    ),
    (
        "admin on a public address without a token",
        "[gateway]\nadmin = tcp:9901:interface=192.0.2.10\n",
        [
            "@2: [gateway] admin: the admin endpoint would be reachable on 192.0.2.10 without "
            "authentication; set adminToken = /path/to/token-file, or listen on loopback "
            "(interface=127.0.0.1) or a unix: socket"
        ],
    ),
    (
        "adminToken file missing",
        "[gateway]\nadminToken = admin.token\n",
        [
            "@2: [gateway] adminToken: cannot read 'admin.token' ({tmp}/admin.token): No such file or directory"
        ],
    ),
    (
        "adminTokenForReads",
        "[gateway]\nadminTokenForReads = sometimes\n",
        [
            "@2: [gateway] adminTokenForReads: expected true or false (or yes/no, 1/0, Enabled/Disabled), "
            "got 'sometimes'"
        ],
    ),
    (
        "affinitySecret and affinitySecrets",
        "[gateway]\naffinitySecret = 0123456789abcdef\naffinitySecrets = 0123456789abcdefg\n",
        ["@3: [gateway] affinitySecrets: expected affinitySecret or affinitySecrets, not both"],
    ),
    (
        "affinitySecrets item too short (and not echoed)",
        "[gateway]\naffinitySecrets = 0123456789abcdef, hunter2\n",
        ["@2: [gateway] affinitySecrets: expected at least 16 characters in each secret, got 7 in secret 2"],
    ),
    (
        "affinitySecrets repeated",
        "[gateway]\naffinitySecrets = 0123456789abcdef, 0123456789abcdeX, 0123456789abcdef\n",
        ["@2: [gateway] affinitySecrets: secret 3 repeats secret 1"],
    ),
    (
        "maxConnections range",
        "[gateway]\nmaxConnections = 0\n",
        ["@2: [gateway] maxConnections: expected 1..1000000, got 0"],
    ),
    (
        "maxConnectionsPerClient word",
        "[gateway]\nmaxConnectionsPerClient = lots\n",
        ["@2: [gateway] maxConnectionsPerClient: expected 0..1000000, got 'lots'"],
    ),
    (
        "loadDistributionPolicy weight out of range",
        "[loadDistributionPolicy:ld]\ntarget.a = pool, 0\n",
        ["@2: [loadDistributionPolicy:ld] target.a: expected a weight of 1..100 after the pool, got '0'"],
    ),
    (
        "loadDistributionPolicy weight not a number",
        "[loadDistributionPolicy:ld]\ntarget.a = pool, heavy\n",
        ["@2: [loadDistributionPolicy:ld] target.a: expected a weight of 1..100 after the pool, got 'heavy'"],
    ),
    (
        "loadDistributionPolicy target syntax",
        "[loadDistributionPolicy:ld]\ntarget.a = pool, 1, 2\n",
        ["@2: [loadDistributionPolicy:ld] target.a: expected 'POOL' or 'POOL, WEIGHT', got 'pool, 1, 2'"],
    ),
    (
        "loadDistributionPolicy algorithm",
        "[loadDistributionPolicy:ld]\nloadDistributionAlgorithm = Random\ntarget.a = pool\n",
        [
            "@2: [loadDistributionPolicy:ld] loadDistributionAlgorithm: expected RoundRobin, LeastConnections or IpHash, got 'Random'"
        ],
    ),
    (
        "loadDistributionPolicy unknown pool",
        "[loadDistributionPolicy:ld]\ntarget.a = nopool\n",
        [
            "@2: [loadDistributionPolicy:ld] target.a: refers to backendAddressPool 'nopool', which is not defined"
        ],
    ),
    (
        "loadDistributionPolicy without targets",
        "[loadDistributionPolicy:ld]\nloadDistributionAlgorithm = IpHash\n",
        ["@1: [loadDistributionPolicy:ld]: expected at least one target.NAME = POOL[, WEIGHT] key"],
    ),
    (
        "loadDistributionPolicy pool twice",
        "[loadDistributionPolicy:ld]\ntarget.a = pool\ntarget.b = POOL, 2\n",
        ["@3: [loadDistributionPolicy:ld] target.b: backendAddressPool 'POOL' is already target 'a'"],
    ),
    (
        "rule with pool and loadDistributionPolicy",
        _L2
        + "[loadDistributionPolicy:ld]\ntarget.a = pool\n[requestRoutingRule:r2]\nhttpListener = l2\nbackendAddressPool = pool\nloadDistributionPolicy = ld\nbackendHttpSettings = settings\n",
        [
            "@9: [requestRoutingRule:r2] loadDistributionPolicy: expected backendAddressPool or loadDistributionPolicy, not both"
        ],
    ),
    (
        "rule with an unknown loadDistributionPolicy",
        _L2
        + "[requestRoutingRule:r2]\nhttpListener = l2\nloadDistributionPolicy = nope\nbackendHttpSettings = settings\n",
        [
            "@6: [requestRoutingRule:r2] loadDistributionPolicy: refers to loadDistributionPolicy 'nope', which is not defined"
        ],
    ),
    (
        "loadDistributionPolicy without settings",
        _L2
        + "[loadDistributionPolicy:ld]\ntarget.a = pool\n[requestRoutingRule:r2]\nhttpListener = l2\nloadDistributionPolicy = ld\n",
        ["@8: [requestRoutingRule:r2] loadDistributionPolicy: needs backendHttpSettings as well"],
    ),
    (
        "loadDistributionPolicy and redirect",
        _L2
        + "[loadDistributionPolicy:ld]\ntarget.a = pool\n[redirectConfiguration:away]\ntargetUrl = https://example.com\n[requestRoutingRule:r2]\nhttpListener = l2\nloadDistributionPolicy = ld\nbackendHttpSettings = settings\nredirectConfiguration = away\n",
        [
            "@12: [requestRoutingRule:r2] redirectConfiguration: expected either backendAddressPool and backendHttpSettings or redirectConfiguration, not both"
        ],
    ),
    (
        "loadDistributionPolicy on a path-based rule",
        _L2
        + "[loadDistributionPolicy:ld]\ntarget.a = pool\n[urlPathMap:m]\ndefaultLoadDistributionPolicy = ld\ndefaultBackendHttpSettings = settings\npathRule.a = /a/* -> loadDistributionPolicy:ld, settings\n[requestRoutingRule:r2]\nruleType = PathBasedRouting\nhttpListener = l2\nurlPathMap = m\nloadDistributionPolicy = ld\n",
        ["@14: [requestRoutingRule:r2] loadDistributionPolicy: not allowed with ruleType PathBasedRouting"],
    ),
    (
        "path rule with an unknown loadDistributionPolicy",
        _L2
        + "[urlPathMap:m]\ndefaultLoadDistributionPolicy = nope\ndefaultBackendHttpSettings = settings\npathRule.a = /a/* -> loadDistributionPolicy:none, settings\n[requestRoutingRule:r2]\nruleType = PathBasedRouting\nhttpListener = l2\nurlPathMap = m\n",
        [
            "@5: [urlPathMap:m] defaultLoadDistributionPolicy: refers to loadDistributionPolicy 'nope', which is not defined",
            "@7: [urlPathMap:m] pathRule.a: refers to loadDistributionPolicy 'none', which is not defined",
        ],
    ),
    (
        "path map default pool and loadDistributionPolicy",
        _L2
        + "[loadDistributionPolicy:ld]\ntarget.a = pool\n[urlPathMap:m]\ndefaultBackendAddressPool = pool\ndefaultLoadDistributionPolicy = ld\ndefaultBackendHttpSettings = settings\npathRule.a = /a/* -> pool, settings\n[requestRoutingRule:r2]\nruleType = PathBasedRouting\nhttpListener = l2\nurlPathMap = m\n",
        [
            "@8: [urlPathMap:m] defaultLoadDistributionPolicy: expected defaultBackendAddressPool or defaultLoadDistributionPolicy, not both"
        ],
    ),
    (
        "maxRequestLineSize range",
        "[gateway]\nmaxRequestLineSize = 100\n",
        ["@2: [gateway] maxRequestLineSize: expected 1024..1048576 bytes, got 100"],
    ),
    (
        "maxRequestHeaderSize word",
        "[gateway]\nmaxRequestHeaderSize = 32k\n",
        ["@2: [gateway] maxRequestHeaderSize: expected 1024..1048576 bytes, got '32k'"],
    ),
    (
        "maxRequestHeaderCount range",
        "[gateway]\nmaxRequestHeaderCount = 0\n",
        ["@2: [gateway] maxRequestHeaderCount: expected 1..10000, got 0"],
    ),
    (
        "maxRequestBodySize negative",
        "[gateway]\nmaxRequestBodySize = -1\n",
        ["@2: [gateway] maxRequestBodySize: expected 0..4611686018427387904 bytes, got -1"],
    ),
    (
        "requestBodyTimeout",
        "[gateway]\nrequestBodyTimeout = 2h\n",
        ["@2: [gateway] requestBodyTimeout: expected 1..3600 seconds, got 2h"],
    ),
    (
        "allowUnderscoresInHeaders",
        "[gateway]\nallowUnderscoresInHeaders = sometimes\n",
        [
            "@2: [gateway] allowUnderscoresInHeaders: expected true or false "
            "(or yes/no, 1/0, Enabled/Disabled), got 'sometimes'"
        ],
    ),
    (
        "enableHttp2",
        "[gateway]\nenableHttp2 = maybe\n",
        ["@2: [gateway] enableHttp2: expected true or false (or yes/no, 1/0, Enabled/Disabled), got 'maybe'"],
    ),
    (
        "trustedProxies not a range",
        "[gateway]\ntrustedProxies = 10.0.0.0/8, proxy.example\n",
        [
            "@2: [gateway] trustedProxies: expected an IPv4 or IPv6 address range (CIDR, e.g. 10.0.0.0/8), got 'proxy.example'"
        ],
    ),
    (
        "trustedProxies host bits",
        "[gateway]\ntrustedProxies = 10.0.0.1/8\n",
        [
            "@2: [gateway] trustedProxies: expected an address range in CIDR form with no host bits set, got '10.0.0.1/8'"
        ],
    ),
    (
        "trustedProxies twice",
        "[gateway]\ntrustedProxies = 10.0.0.0/8, 10.0.0.0/8\n",
        ["@2: [gateway] trustedProxies: 10.0.0.0/8 is listed twice"],
    ),
    (
        "accessLogFormat",
        "[gateway]\naccessLogFormat = xml\n",
        ["@2: [gateway] accessLogFormat: expected text or json, got 'xml'"],
    ),
    (
        "requestIdHeader not a header name",
        "[gateway]\nrequestIdHeader = X Request\n",
        ["@2: [gateway] requestIdHeader: expected a header name, got 'X Request'"],
    ),
    (
        "requestIdHeader taken",
        "[gateway]\nrequestIdHeader = traceparent\n",
        [
            "@2: [gateway] requestIdHeader: header 'traceparent' has a meaning of its own and cannot carry the request ID"
        ],
    ),
    (
        "trustClientRequestId",
        "[gateway]\ntrustClientRequestId = maybe\n",
        [
            "@2: [gateway] trustClientRequestId: expected true or false (or yes/no, 1/0, Enabled/Disabled), got 'maybe'"
        ],
    ),
    (
        "customErrorPage status not supported",
        "[gateway]\ncustomErrorPage.418 = teapot.html\ncustomErrorPage.x = a.html\n",
        [
            "@2: [gateway] customErrorPage.418: expected a status of 400, 403, 404, 405, 408, 500, 502, 503, 504 "
            "after customErrorPage., got '418'",
            "@3: [gateway] customErrorPage.x: expected a status of 400, 403, 404, 405, 408, 500, 502, 503, 504 "
            "after customErrorPage., got 'x'",
        ],
    ),
    (
        "customErrorPage missing file",
        "[gateway]\ncustomErrorPage.502 = nope.html\n",
        [
            "@2: [gateway] customErrorPage.502: cannot read 'nope.html' ({tmp}/nope.html): No such file or directory"
        ],
    ),
    (
        "customErrorPage empty value",
        "[gateway]\ncustomErrorPage.502 =\n",
        ["@2: [gateway] customErrorPage.502: expected the path of an HTML file"],
    ),
    (
        "customErrorPage oversized, on a listener",
        "[httpListener:l2]\nfrontendPort = http\nhostNames = b.example.com\ncustomErrorPage.504 = /dev/zero\n",
        [
            "@1: [httpListener:l2]: no requestRoutingRule uses this listener, so its requests could not be routed",
            "@4: [httpListener:l2] customErrorPage.504: '/dev/zero' is over 1048576 bytes (1 MiB)",
        ],
    ),
    (
        "customErrorPage empty file",
        "[gateway]\ncustomErrorPage.503 = /dev/null\n",
        ["@2: [gateway] customErrorPage.503: '/dev/null' is empty"],
    ),
    (
        "lameDuckPeriod range",
        "[gateway]\nlameDuckPeriod = 2h\n",
        ["@2: [gateway] lameDuckPeriod: expected 0..3600 seconds, got 2h"],
    ),
    (
        "watchConfig not a boolean",
        "[gateway]\nwatchConfig = sometimes\n",
        [
            "@2: [gateway] watchConfig: expected true or false (or yes/no, 1/0, Enabled/Disabled), got 'sometimes'"
        ],
    ),
    # --- [frontendPort]
    (
        "proxyProtocol without sources",
        "[frontendPort:p]\nport = 81\nproxyProtocol = true\n",
        [
            "@3: [frontendPort:p] proxyProtocol: proxyProtocolSources is required with proxyProtocol = true "
            "(the balancers' address ranges, e.g. 10.0.0.0/8)"
        ],
    ),
    (
        "proxyProtocolSources without proxyProtocol",
        "[frontendPort:p]\nport = 81\nproxyProtocolSources = 10.0.0.0/8\n",
        ["@3: [frontendPort:p] proxyProtocolSources: only allowed with proxyProtocol = true"],
    ),
    (
        "proxyProtocolSources not a range",
        "[frontendPort:p]\nendpoint = tcp:81\nproxyProtocol = yes\nproxyProtocolSources = lb.example\n",
        [
            "@4: [frontendPort:p] proxyProtocolSources: expected an IPv4 or IPv6 address range (CIDR, e.g. 10.0.0.0/8), got 'lb.example'"
        ],
    ),
    (
        "proxyProtocol not a boolean",
        "[frontendPort:p]\nport = 81\nproxyProtocol = v2\n",
        [
            "@3: [frontendPort:p] proxyProtocol: expected true or false (or yes/no, 1/0, Enabled/Disabled), got 'v2'"
        ],
    ),
    (
        "port range",
        "[frontendPort:p]\nport = 65536\n",
        ["@2: [frontendPort:p] port: expected 1..65535, got 65536"],
    ),
    (
        "port and endpoint",
        "[frontendPort:p]\nport = 81\nendpoint = tcp:82\n",
        ["@3: [frontendPort:p] endpoint: expected port or endpoint, not both"],
    ),
    (
        "neither port nor endpoint",
        "[frontendPort:p]\n",
        ["@1: [frontendPort:p]: expected port or endpoint"],
    ),
    (
        "interface with endpoint",
        "[frontendPort:p]\nendpoint = tcp:81\ninterface = 127.0.0.1\n",
        ["@3: [frontendPort:p] interface: only allowed with port; put interface= into the endpoint string"],
    ),
    (
        "interface not an address",
        "[frontendPort:p]\nport = 81\ninterface = localhost\n",
        ["@3: [frontendPort:p] interface: expected an IP address, got 'localhost'"],
    ),
    (
        "endpoint kind",
        "[frontendPort:p]\nendpoint = le:/certs:tcp:443\n",
        [f"@2: [frontendPort:p] endpoint: {ENDPOINT}, got 'le:/certs:tcp:443'"],
    ),
    (
        "same port twice",
        "[frontendPort:again]\nendpoint = tcp:port=8080\n",
        ["@2: [frontendPort:again] endpoint: port 8080 is already used by frontendPort 'http' (gw.ini:1)"],
    ),
    (
        "same port, overlapping interface",
        "[frontendPort:again]\nport = 8080\ninterface = 127.0.0.1\n",
        ["@2: [frontendPort:again] port: port 8080 is already used by frontendPort 'http' (gw.ini:1)"],
    ),
    # --- certificates
    (
        "certificate missing",
        "[sslCertificate:c]\ncertificate = /nonexistent/cert.pem\nprivateKey = nokey.pem\n",
        [
            "@2: [sslCertificate:c] certificate: cannot read '/nonexistent/cert.pem': No such file or directory",
            "@3: [sslCertificate:c] privateKey: cannot read 'nokey.pem' ({tmp}/nokey.pem): No such file or directory",
        ],
    ),
    (
        "privateKey not given",
        "[sslCertificate:c]\ncertificate = cert.pem\n",
        [
            "@1: [sslCertificate:c] privateKey: required key is missing",
        ],
    ),
    (
        "trusted root missing",
        "[trustedRootCertificate:root]\ncertificate = nope.pem\n",
        [
            (
                "@2: [trustedRootCertificate:root] certificate: cannot read 'nope.pem' ({tmp}/nope.pem): "
                "No such file or directory"
            ),
        ],
    ),
    (
        "trusted root not given",
        "[trustedRootCertificate:root]\n",
        [
            "@1: [trustedRootCertificate:root] certificate: required key is missing",
        ],
    ),
    # --- [httpListener]
    (
        "listener protocol",
        "[httpListener:l2]\nfrontendPort = http\nprotocol = Htp\nhostNames = a.example.com\n",
        [
            "@1: [httpListener:l2]: no requestRoutingRule uses this listener, so its requests could not be routed",
            "@3: [httpListener:l2] protocol: expected Http or Https, got 'Htp'",
        ],
    ),
    (
        "listener without frontendPort",
        "[httpListener:l2]\nhostNames = a.example.com\n",
        [
            "@1: [httpListener:l2] frontendPort: required key is missing",
            "@1: [httpListener:l2]: no requestRoutingRule uses this listener, so its requests could not be routed",
        ],
    ),
    (
        "Https without certificate",
        "[frontendPort:https]\nport = 8443\n[httpListener:l2]\nfrontendPort = https\nprotocol = Https\n",
        [
            "@3: [httpListener:l2] sslCertificate: required for protocol Https",
            "@3: [httpListener:l2]: no requestRoutingRule uses this listener, so its requests could not be routed",
        ],
    ),
    (
        "unknown predefined policy",
        "[gateway]\nsslPolicyName = AppGwSslPolicy2099\n",
        [
            "@2: [gateway] sslPolicyName: unknown predefined policy 'AppGwSslPolicy2099'; expected one of: "
            "AppGwSslPolicy20150501, AppGwSslPolicy20170401, AppGwSslPolicy20170401S, "
            "AppGwSslPolicy20220101, AppGwSslPolicy20220101S"
        ],
    ),
    (
        "unknown policy type",
        "[gateway]\nsslPolicyType = Strict\n",
        ["@2: [gateway] sslPolicyType: expected Predefined, Custom or CustomV2, got 'Strict'"],
    ),
    (
        "unknown minimum protocol version",
        "[gateway]\nsslPolicyType = Custom\nsslMinProtocolVersion = TLS1.2\n",
        ["@3: [gateway] sslMinProtocolVersion: expected TLSv1_0, TLSv1_1, TLSv1_2 or TLSv1_3, got 'TLS1.2'"],
    ),
    (
        "unknown cipher suite",
        "[gateway]\nsslPolicyType = Custom\nsslCipherSuites = ECDHE-RSA-AES128-GCM-SHA256\n",
        [
            "@3: [gateway] sslCipherSuites: unknown cipher suite 'ECDHE-RSA-AES128-GCM-SHA256'; expected "
            "Azure's names, such as TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 (see docs/tls.rst)"
        ],
    ),
    (
        "minimum version with a predefined policy",
        "[gateway]\nsslPolicyName = AppGwSslPolicy20220101\nsslMinProtocolVersion = TLSv1_3\n",
        [
            "@3: [gateway] sslMinProtocolVersion: only with sslPolicyType Custom or CustomV2; "
            "a predefined policy fixes it"
        ],
    ),
    (
        "policy name with a custom policy",
        (
            "[gateway]\nsslPolicyType = CustomV2\nsslPolicyName = AppGwSslPolicy20220101\n"
            "sslMinProtocolVersion = TLSv1_3\n"
        ),
        ["@3: [gateway] sslPolicyName: only with sslPolicyType Predefined"],
    ),
    (
        "Custom without cipher suites",
        "[gateway]\nsslPolicyType = Custom\nsslMinProtocolVersion = TLSv1_2\n",
        ["@1: [gateway] sslCipherSuites: required: the TLS 1.2 cipher suites to offer"],
    ),
    (
        "TLS 1.3 needs CustomV2",
        (
            "[gateway]\nsslPolicyType = Custom\nsslMinProtocolVersion = TLSv1_3\n"
            "sslCipherSuites = TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n"
        ),
        ["@3: [gateway] sslMinProtocolVersion: TLSv1_3 needs sslPolicyType CustomV2"],
    ),
    (
        "CustomV2 refuses TLS 1.0",
        (
            "[gateway]\nsslPolicyType = CustomV2\nsslMinProtocolVersion = TLSv1_0\n"
            "sslCipherSuites = TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n"
        ),
        [
            "@3: [gateway] sslMinProtocolVersion: TLSv1_0 is not allowed with CustomV2 (as in Azure: use "
            "sslPolicyType Custom or an older predefined policy for TLS 1.0 and 1.1)"
        ],
    ),
    (
        "TLS 1.2 suites with a TLS 1.3 minimum",
        (
            "[gateway]\nsslPolicyType = CustomV2\nsslMinProtocolVersion = TLSv1_3\n"
            "sslCipherSuites = TLS_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n"
        ),
        [
            "@4: [gateway] sslCipherSuites: TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 is a TLS 1.2 suite, of no "
            "use with sslMinProtocolVersion TLSv1_3 (TLS 1.3 suites are fixed)"
        ],
    ),
    (
        "TLS 1.3 suite in a Custom policy",
        (
            "[gateway]\nsslPolicyType = Custom\nsslMinProtocolVersion = TLSv1_2\n"
            "sslCipherSuites = TLS_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n"
        ),
        ["@4: [gateway] sslCipherSuites: TLS_AES_128_GCM_SHA256 is a TLS 1.3 suite: only with CustomV2"],
    ),
    (
        "only DHE suites",
        (
            "[gateway]\nsslPolicyType = Custom\nsslMinProtocolVersion = TLSv1_2\n"
            "sslCipherSuites = TLS_DHE_RSA_WITH_AES_128_GCM_SHA256\n"
        ),
        [
            "@4: [gateway] sslCipherSuites: only TLS_DHE_* suites, which agw (like Application Gateway v2) "
            "never offers"
        ],
    ),
    (
        "repeated cipher suite",
        (
            "[gateway]\nsslPolicyType = Custom\n"
            "sslCipherSuites = TLS_RSA_WITH_AES_128_CBC_SHA, tls_rsa_with_aes_128_cbc_sha\n"
        ),
        ["@3: [gateway] sslCipherSuites: cipher suite 'TLS_RSA_WITH_AES_128_CBC_SHA' is listed twice"],
    ),
    (
        "profile on an Http listener",
        "[sslProfile:p]\n[httpListener:l2]\nfrontendPort = http\nhostNames = a.x\nsslProfile = p\n",
        [
            "@2: [httpListener:l2]: no requestRoutingRule uses this listener, so its requests could not be routed",
            "@5: [httpListener:l2] sslProfile: not allowed with protocol Http",
        ],
    ),
    (
        "unknown profile",
        (
            "[sslCertificate:c]\ncertificate = cert.pem\nprivateKey = key.pem\n[frontendPort:https]\nport = 8443\n"
            "[httpListener:l2]\nfrontendPort = https\nprotocol = Https\nsslCertificate = c\nsslProfile = nope\n"
            "[requestRoutingRule:r2]\nhttpListener = l2\nbackendAddressPool = pool\nbackendHttpSettings = settings\n"
        ),
        ["@10: [httpListener:l2] sslProfile: refers to sslProfile 'nope', which is not defined"],
    ),
    (
        "profile policy problem",
        (
            "[sslProfile:p]\nsslPolicyType = CustomV2\nsslMinProtocolVersion = TLSv1_1\n"
            "sslCipherSuites = TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n"
        ),
        [
            "@3: [sslProfile:p] sslMinProtocolVersion: TLSv1_1 is not allowed with CustomV2 (as in Azure: use "
            "sslPolicyType Custom or an older predefined policy for TLS 1.0 and 1.1)"
        ],
    ),
    (
        "unknown trusted client certificate",
        "[sslProfile:p]\ntrustedClientCertificates = nope\n",
        [
            "@2: [sslProfile:p] trustedClientCertificates: refers to trustedClientCertificate 'nope', "
            "which is not defined"
        ],
    ),
    (
        "trusted client certificate without data",
        "[trustedClientCertificate:t]\n",
        ["@1: [trustedClientCertificate:t] data: required key is missing"],
    ),
    (
        "trusted client certificate that is no CA",
        "[trustedClientCertificate:t]\ndata = cert.pem\n",
        [
            "@2: [trustedClientCertificate:t] data: CN=localhost,O=agw tests is not a CA certificate "
            "(basicConstraints CA:TRUE) ({tmp}/cert.pem)"
        ],
    ),
    (
        "OCSP with passthrough",
        "[sslProfile:p]\nverifyClientAuthMode = Passthrough\nverifyClientRevocation = OCSP\n",
        [
            "@3: [sslProfile:p] verifyClientRevocation: only with trustedClientCertificates "
            "(verifyClientAuthMode Strict)"
        ],
    ),
    (
        "unknown revocation check",
        "[sslProfile:p]\nverifyClientRevocation = CRL\n",
        ["@2: [sslProfile:p] verifyClientRevocation: expected None or OCSP, got 'CRL'"],
    ),
    (
        "bad client auth mode",
        "[sslProfile:p]\nverifyClientAuthMode = Optional\n",
        ["@2: [sslProfile:p] verifyClientAuthMode: expected Strict or Passthrough, got 'Optional'"],
    ),
    (
        "trusted CAs with passthrough",
        "[trustedClientCertificate:t]\ndata = ca.pem\n[sslProfile:p]\ntrustedClientCertificates = t\n"
        "verifyClientAuthMode = Passthrough\n",
        [
            "@4: [sslProfile:p] trustedClientCertificates: not used with verifyClientAuthMode Passthrough "
            "(nothing is verified); remove it"
        ],
    ),
    (
        "issuer DN check without trusted CAs",
        "[sslProfile:p]\nverifyClientCertIssuerDN = true\n",
        [
            "@2: [sslProfile:p] verifyClientCertIssuerDN: only with trustedClientCertificates "
            "(verifyClientAuthMode Strict)"
        ],
    ),
    (
        "Http with certificate",
        "[httpListener:l2]\nfrontendPort = http\nhostNames = a.example.com\nsslCertificate = c\n",
        [
            "@1: [httpListener:l2]: no requestRoutingRule uses this listener, so its requests could not be routed",
            "@4: [httpListener:l2] sslCertificate: not allowed with protocol Http",
            "@4: [httpListener:l2] sslCertificate: refers to sslCertificate 'c', which is not defined",
        ],
    ),
    (
        "dangling frontendPort",
        "[httpListener:l2]\nfrontendPort = htp\nhostNames = a.example.com\n",
        [
            "@1: [httpListener:l2]: no requestRoutingRule uses this listener, so its requests could not be routed",
            "@2: [httpListener:l2] frontendPort: refers to frontendPort 'htp', which is not defined",
        ],
    ),
    (
        "six host names",
        "[httpListener:l2]\nfrontendPort = http\nhostNames = a.x, b.x, c.x, d.x, e.x, f.x\n",
        [
            "@1: [httpListener:l2]: no requestRoutingRule uses this listener, so its requests could not be routed",
            "@3: [httpListener:l2] hostNames: expected at most 5 host names, got 6",
        ],
    ),
    (
        "host name twice in a list",
        "[httpListener:l2]\nfrontendPort = http\nhostNames = a.x, A.x\n",
        [
            "@1: [httpListener:l2]: no requestRoutingRule uses this listener, so its requests could not be routed",
            "@3: [httpListener:l2] hostNames: host name 'a.x' is listed twice",
        ],
    ),
    (
        "bad host name",
        "[httpListener:l2]\nfrontendPort = http\nhostName = a..x\n",
        [
            "@1: [httpListener:l2]: no requestRoutingRule uses this listener, so its requests could not be routed",
            f"@3: [httpListener:l2] hostName: {HOST_PATTERN}, got 'a..x'",
        ],
    ),
    (
        "hostName and hostNames",
        "[httpListener:l2]\nfrontendPort = http\nhostNames = a.x\nhostName = b.x\n",
        [
            "@1: [httpListener:l2]: no requestRoutingRule uses this listener, so its requests could not be routed",
            "@4: [httpListener:l2] hostName: expected hostName or hostNames, not both",
        ],
    ),
    # --- [backendAddressPool]
    (
        "bad pool member",
        "[backendAddressPool:p2]\nbackendAddresses = 10.0.0.4, 10.0.0.300\n",
        [
            "@2: [backendAddressPool:p2] backendAddresses: expected an IP address or a DNS name, got '10.0.0.300'",
        ],
    ),
    (
        "bad pool member port",
        "[backendAddressPool:p2]\nbackendAddresses = 10.0.0.4:99999\n",
        [
            "@2: [backendAddressPool:p2] backendAddresses: expected a port 1..65535 after ':', got '10.0.0.4:99999'",
        ],
    ),
    (
        "pool member twice",
        "[backendAddressPool:p2]\nbackendAddresses = a.internal:80,\n  A.internal:80\n",
        [
            "@2: [backendAddressPool:p2] backendAddresses: address 'a.internal:80' is listed twice",
        ],
    ),
    # --- [probe]
    (
        "probe interval",
        "[probe:p1]\ninterval = 0\n",
        ["@2: [probe:p1] interval: expected 1..86400 seconds, got 0"],
    ),
    (
        "probe timeout",
        "[probe:p1]\ntimeout = 30x\n",
        ["@2: [probe:p1] timeout: expected 1..86400 seconds, got '30x'"],
    ),
    (
        "probe unhealthyThreshold",
        "[probe:p1]\nunhealthyThreshold = 21\n",
        ["@2: [probe:p1] unhealthyThreshold: expected 1..20, got 21"],
    ),
    (
        "probe status codes",
        "[probe:p1]\nmatch.statusCodes = 200-399, 600\n",
        ["@2: [probe:p1] match.statusCodes: expected status codes in 100..599, got '600'"],
    ),
    (
        "probe path",
        "[probe:p1]\npath = health\n",
        ["@2: [probe:p1] path: expected a path starting with '/', got 'health'"],
    ),
    ("probe port", "[probe:p1]\nport = 0\n", ["@2: [probe:p1] port: expected 1..65535, got 0"]),
    (
        "probe protocol",
        "[probe:p1]\nprotocol = tcp\n",
        ["@2: [probe:p1] protocol: expected Http or Https, got 'tcp'"],
    ),
    (
        "probe host",
        "[probe:p1]\nhost = not a host\n",
        ["@2: [probe:p1] host: expected an IP address or a DNS name, got 'not a host'"],
    ),
    (
        "probe pick bool",
        "[probe:p1]\npickHostNameFromBackendHttpSettings = sure\n",
        [
            (
                "@2: [probe:p1] pickHostNameFromBackendHttpSettings: expected true or false "
                "(or yes/no, 1/0, Enabled/Disabled), got 'sure'"
            )
        ],
    ),
    (
        "probe host and pick",
        "[probe:p1]\npickHostNameFromBackendHttpSettings = true\nhost = a.x\n",
        ["@3: [probe:p1] host: expected host or pickHostNameFromBackendHttpSettings = true, not both"],
    ),
    (
        "probe protocol differs from its settings",
        "[probe:p1]\nprotocol = Https\n[backendHttpSettings:s2]\nprobe = p1\n",
        [
            "@4: [backendHttpSettings:s2] probe: probe 'p1' has protocol Https; expected Http like these settings"
        ],
    ),
    (
        "probe picks a host the settings do not have",
        "[probe:p1]\npickHostNameFromBackendHttpSettings = yes\n[backendHttpSettings:s2]\nprobe = P1\n",
        [
            (
                "@4: [backendHttpSettings:s2] probe: probe 'p1' takes its host name from these settings, "
                "but they set neither hostName nor pickHostNameFromBackendAddress"
            )
        ],
    ),
    # --- [backendHttpSettings]
    (
        "settings port",
        "[backendHttpSettings:s2]\nport = http\n",
        ["@2: [backendHttpSettings:s2] port: expected 1..65535, got 'http'"],
    ),
    (
        "settings affinity",
        "[backendHttpSettings:s2]\ncookieBasedAffinity = On\n",
        ["@2: [backendHttpSettings:s2] cookieBasedAffinity: expected Enabled or Disabled, got 'On'"],
    ),
    (
        "settings cookie name",
        "[backendHttpSettings:s2]\naffinityCookieName = my cookie\n",
        [
            (
                "@2: [backendHttpSettings:s2] affinityCookieName: expected a cookie name "
                "(letters, digits and !#$%&'*+-.^_`|~), got 'my cookie'"
            )
        ],
    ),
    (
        "settings requestTimeout",
        "[backendHttpSettings:s2]\nrequestTimeout = 0\n",
        ["@2: [backendHttpSettings:s2] requestTimeout: expected 1..86400 seconds, got 0"],
    ),
    (
        "settings connectTimeout",
        "[backendHttpSettings:s2]\nconnectTimeout = 10ms\n",
        ["@2: [backendHttpSettings:s2] connectTimeout: expected 0.1..3600 seconds, got 10ms"],
    ),
    (
        "settings dangling probe",
        "[backendHttpSettings:s2]\nprobe = nope\n",
        ["@2: [backendHttpSettings:s2] probe: refers to probe 'nope', which is not defined"],
    ),
    (
        "settings hostName",
        "[backendHttpSettings:s2]\nhostName = *.x\n",
        ["@2: [backendHttpSettings:s2] hostName: expected an IP address or a DNS name, got '*.x'"],
    ),
    (
        "settings hostName and pick",
        "[backendHttpSettings:s2]\nhostName = a.x\npickHostNameFromBackendAddress = 1\n",
        [
            (
                "@3: [backendHttpSettings:s2] pickHostNameFromBackendAddress: expected hostName or "
                "pickHostNameFromBackendAddress = true, not both"
            )
        ],
    ),
    (
        "settings connectionDraining",
        "[backendHttpSettings:s2]\nconnectionDraining = 3601\n",
        ["@2: [backendHttpSettings:s2] connectionDraining: expected 0..3600 seconds, got 3601"],
    ),
    (
        "settings path",
        "[backendHttpSettings:s2]\npath = api/\n",
        ["@2: [backendHttpSettings:s2] path: expected a path starting with '/', got 'api/'"],
    ),
    (
        "settings dangling trusted root",
        "[backendHttpSettings:s2]\nprotocol = Https\ntrustedRootCertificates = r1, r2\n",
        [
            "@3: [backendHttpSettings:s2] trustedRootCertificates: refers to trustedRootCertificate 'r1', which is not defined",
            "@3: [backendHttpSettings:s2] trustedRootCertificates: refers to trustedRootCertificate 'r2', which is not defined",
        ],
    ),
    (
        "settings trusted roots over Http",
        "[trustedRootCertificate:r1]\ncertificate = ca.pem\n[backendHttpSettings:s2]\ntrustedRootCertificates = r1\n",
        ["@4: [backendHttpSettings:s2] trustedRootCertificates: not allowed with protocol Http"],
    ),
    (
        "settings verifyCertificate",
        "[backendHttpSettings:s2]\nverifyCertificate = maybe\n",
        [
            (
                "@2: [backendHttpSettings:s2] verifyCertificate: expected true or false "
                "(or yes/no, 1/0, Enabled/Disabled), got 'maybe'"
            )
        ],
    ),
    (
        "settings webSocketIdleTimeout",
        "[backendHttpSettings:s2]\nwebSocketIdleTimeout = 0\n",
        ["@2: [backendHttpSettings:s2] webSocketIdleTimeout: expected 1..86400 seconds, got 0"],
    ),
    (
        "settings webSocketPingInterval",
        "[backendHttpSettings:s2]\nwebSocketPingInterval = 2d\n",
        ["@2: [backendHttpSettings:s2] webSocketPingInterval: expected 0..86400 seconds, got '2d'"],
    ),
    (
        "settings webSocketMaxMessageSize",
        "[backendHttpSettings:s2]\nwebSocketMaxMessageSize = 2048G\n",
        [
            (
                "@2: [backendHttpSettings:s2] webSocketMaxMessageSize: expected 0..1099511627776 bytes "
                "(suffixes K, M, G allowed), got 2048G"
            )
        ],
    ),
    (
        "settings maxConnectionsPerServer",
        "[backendHttpSettings:s2]\nmaxConnectionsPerServer = -1\n",
        ["@2: [backendHttpSettings:s2] maxConnectionsPerServer: expected 0..1000000, got -1"],
    ),
    (
        "settings maxQueuedRequestsPerServer",
        "[backendHttpSettings:s2]\nmaxQueuedRequestsPerServer = 2000000\n",
        ["@2: [backendHttpSettings:s2] maxQueuedRequestsPerServer: expected 0..1000000, got 2000000"],
    ),
    (
        "settings queueTimeout",
        "[backendHttpSettings:s2]\nqueueTimeout = 0\n",
        ["@2: [backendHttpSettings:s2] queueTimeout: expected 0.001..3600 seconds, got 0"],
    ),
    (
        "settings maxIdleConnectionsPerServer",
        "[backendHttpSettings:s2]\nmaxIdleConnectionsPerServer = many\n",
        ["@2: [backendHttpSettings:s2] maxIdleConnectionsPerServer: expected 0..1000000, got 'many'"],
    ),
    (
        "settings idleConnectionTimeout",
        "[backendHttpSettings:s2]\nidleConnectionTimeout = 2h\n",
        ["@2: [backendHttpSettings:s2] idleConnectionTimeout: expected 1..3600 seconds, got 2h"],
    ),
    # --- [redirectConfiguration]
    (
        "redirect type",
        "[redirectConfiguration:r]\nredirectType = Moved\ntargetUrl = https://x.example/\n",
        [
            "@2: [redirectConfiguration:r] redirectType: expected Permanent, Found, SeeOther or Temporary, got 'Moved'"
        ],
    ),
    (
        "redirect to both",
        "[redirectConfiguration:r]\ntargetUrl = https://x.example/\ntargetListener = l1\n",
        ["@3: [redirectConfiguration:r] targetListener: expected targetListener or targetUrl, not both"],
    ),
    (
        "redirect to nothing",
        "[redirectConfiguration:r]\nincludePath = false\n",
        ["@1: [redirectConfiguration:r]: expected targetListener or targetUrl"],
    ),
    (
        "redirect URL",
        "[redirectConfiguration:r]\ntargetUrl = ftp://x.example/\n",
        [
            "@2: [redirectConfiguration:r] targetUrl: expected an absolute http:// or https:// URL, got 'ftp://x.example/'"
        ],
    ),
    (
        "redirect relative URL",
        "[redirectConfiguration:r]\ntargetUrl = /elsewhere\n",
        [
            "@2: [redirectConfiguration:r] targetUrl: expected an absolute http:// or https:// URL, got '/elsewhere'"
        ],
    ),
    (
        "redirect dangling listener",
        "[redirectConfiguration:r]\ntargetListener = l9\n",
        ["@2: [redirectConfiguration:r] targetListener: refers to httpListener 'l9', which is not defined"],
    ),
    (
        "redirect includeQueryString",
        "[redirectConfiguration:r]\ntargetListener = l1\nincludeQueryString = nah\n",
        [
            (
                "@3: [redirectConfiguration:r] includeQueryString: expected true or false "
                "(or yes/no, 1/0, Enabled/Disabled), got 'nah'"
            )
        ],
    ),
    # --- [urlPathMap]
    (
        "path map without default",
        "[urlPathMap:m]\npathRule.a = /a/* -> pool, settings\n",
        [
            (
                "@1: [urlPathMap:m]: expected defaultBackendAddressPool and defaultBackendHttpSettings, "
                "or defaultRedirectConfiguration"
            )
        ],
    ),
    (
        "path map default pool alone",
        "[urlPathMap:m]\ndefaultBackendAddressPool = pool\npathRule.a = /a/* -> pool, settings\n",
        ["@2: [urlPathMap:m] defaultBackendAddressPool: needs defaultBackendHttpSettings as well"],
    ),
    (
        "path map default pool and redirect",
        (
            "[redirectConfiguration:r]\ntargetUrl = https://x.example/\n"
            "[urlPathMap:m]\ndefaultBackendAddressPool = pool\ndefaultBackendHttpSettings = settings\n"
            "defaultRedirectConfiguration = r\npathRule.a = /a/* -> pool, settings\n"
        ),
        [
            (
                "@6: [urlPathMap:m] defaultRedirectConfiguration: expected either defaultBackendAddressPool "
                "and defaultBackendHttpSettings or defaultRedirectConfiguration, not both"
            )
        ],
    ),
    (
        "path map without rules",
        "[urlPathMap:m]\ndefaultBackendAddressPool = pool\ndefaultBackendHttpSettings = settings\n",
        ["@1: [urlPathMap:m]: expected at least one pathRule.NAME key"],
    ),
    (
        "path rule syntax",
        (
            "[urlPathMap:m]\ndefaultBackendAddressPool = pool\ndefaultBackendHttpSettings = settings\n"
            "pathRule.a = /a/* pool settings\n"
        ),
        [f"@4: [urlPathMap:m] pathRule.a: expected {RULE_HINT}, got '/a/* pool settings'"],
    ),
    (
        "path rule wildcard in the middle",
        (
            "[urlPathMap:m]\ndefaultBackendAddressPool = pool\ndefaultBackendHttpSettings = settings\n"
            "pathRule.a = /a/*/b -> pool, settings\n"
        ),
        ["@4: [urlPathMap:m] pathRule.a: expected '*' only at the end of a path, got '/a/*/b'"],
    ),
    (
        "path rule query",
        (
            "[urlPathMap:m]\ndefaultBackendAddressPool = pool\ndefaultBackendHttpSettings = settings\n"
            "pathRule.a = /a?x=1 -> pool, settings\n"
        ),
        [
            (
                "@4: [urlPathMap:m] pathRule.a: expected a path without '?' or '#' "
                "(paths match without the query), got '/a?x=1'"
            )
        ],
    ),
    (
        "path listed in two rules",
        (
            "[urlPathMap:m]\ndefaultBackendAddressPool = pool\ndefaultBackendHttpSettings = settings\n"
            "pathRule.a = /a/* -> pool, settings\npathRule.b = /b, /A/* -> pool, settings\n"
        ),
        ["@5: [urlPathMap:m] pathRule.b: path '/A/*' is already listed in pathRule 'a'"],
    ),
    (
        "path rule name",
        (
            "[urlPathMap:m]\ndefaultBackendAddressPool = pool\ndefaultBackendHttpSettings = settings\n"
            "pathRule.a b = /a/* -> pool, settings\n"
        ),
        [
            (
                "@4: [urlPathMap:m] pathRule.a b: expected a name of 1..80 letters, digits, '_', '.' "
                "or '-', got 'a b'"
            )
        ],
    ),
    (
        "path rule dangling targets",
        (
            "[urlPathMap:m]\ndefaultRedirectConfiguration = gone\n"
            "pathRule.a = /a/* -> pool9, settings9\npathRule.b = /b/* -> redirect:gone2\n"
        ),
        [
            "@2: [urlPathMap:m] defaultRedirectConfiguration: refers to redirectConfiguration 'gone', which is not defined",
            "@3: [urlPathMap:m] pathRule.a: refers to backendAddressPool 'pool9', which is not defined",
            "@3: [urlPathMap:m] pathRule.a: refers to backendHttpSettings 'settings9', which is not defined",
            "@4: [urlPathMap:m] pathRule.b: refers to redirectConfiguration 'gone2', which is not defined",
        ],
    ),
    # --- [rewriteRuleSet]
    (
        "rewrite set without rules",
        "[rewriteRuleSet:rw]\n",
        [
            "@1: [rewriteRuleSet:rw]: expected at least one rule.NAME.requestHeader, responseHeader, "
            "modifiedPath or modifiedQueryString key"
        ],
    ),
    (
        "rewrite unknown key",
        "[rewriteRuleSet:rw]\nrule.a.requestHeaders.X-A = 1\n",
        [
            (
                f"@2: [rewriteRuleSet:rw] rule.a.requestHeaders.X-A: unknown key 'rule.a.requestHeaders.X-A'; "
                f"expected one of: {REWRITE_KEYS}"
            ),
        ],
    ),
    (
        "rewrite rule without action",
        "[rewriteRuleSet:rw]\nrule.a.condition = {var_host} ~ x\n",
        [
            "@2: [rewriteRuleSet:rw] rule.a: expected at least one requestHeader, responseHeader, modifiedPath or "
            "modifiedQueryString action"
        ],
    ),
    (
        "rewrite condition syntax",
        "[rewriteRuleSet:rw]\nrule.a.condition = var_host ~ x\nrule.a.requestHeader.X-A = 1\n",
        [f"@2: [rewriteRuleSet:rw] rule.a.condition: {CONDITION_HINT}, got 'var_host ~ x'"],
    ),
    (
        "rewrite condition regex",
        "[rewriteRuleSet:rw]\nrule.a.condition.2 = {var_uri_path} ~* [a-\nrule.a.requestHeader.X-A = 1\n",
        [
            (
                "@2: [rewriteRuleSet:rw] rule.a.condition.2: pattern '[a-' is not a valid regular expression: "
                "unterminated character set at position 0"
            )
        ],
    ),
    (
        "rewrite condition variable",
        "[rewriteRuleSet:rw]\nrule.a.condition = {client_ip} ~ ^10\\.\nrule.a.requestHeader.X-A = 1\n",
        [
            f"@2: [rewriteRuleSet:rw] rule.a.condition: unknown variable 'client_ip'; expected one of: {VARIABLES}"
        ],
    ),
    (
        "rewrite Connection",
        "[rewriteRuleSet:rw]\nrule.a.requestHeader.Connection = close\n",
        [
            (
                "@2: [rewriteRuleSet:rw] rule.a.requestHeader.Connection: header 'Connection' is hop-by-hop: "
                "the gateway manages it and it cannot be rewritten"
            ),
            "@2: [rewriteRuleSet:rw] rule.a: expected at least one requestHeader, responseHeader, modifiedPath or "
            "modifiedQueryString action",
        ],
    ),
    (
        "rewrite Upgrade",
        "[rewriteRuleSet:rw]\nrule.a.responseHeader.X-A = 1\nrule.a.responseHeader.upgrade =\n",
        [
            (
                "@3: [rewriteRuleSet:rw] rule.a.responseHeader.upgrade: header 'upgrade' is hop-by-hop: "
                "the gateway manages it and it cannot be rewritten"
            ),
        ],
    ),
    (
        "rewrite HTTP2-Settings",
        "[rewriteRuleSet:rw]\nrule.a.requestHeader.X-A = 1\nrule.a.requestHeader.HTTP2-Settings = AAMA\n",
        [
            (
                "@3: [rewriteRuleSet:rw] rule.a.requestHeader.HTTP2-Settings: header 'HTTP2-Settings' is "
                "hop-by-hop: the gateway manages it and it cannot be rewritten"
            ),
        ],
    ),
    (
        "rewrite Content-Length",
        "[rewriteRuleSet:rw]\nrule.a.responseHeader.Content-Length = 0\nrule.a.responseHeader.X-A = 1\n",
        [
            (
                "@2: [rewriteRuleSet:rw] rule.a.responseHeader.Content-Length: header 'Content-Length' "
                "frames the message and cannot be rewritten"
            ),
        ],
    ),
    (
        "rewrite header name",
        "[rewriteRuleSet:rw]\nrule.a.requestHeader.X(A) = 1\nrule.a.requestHeader.X-B = 1\n",
        [
            "@2: [rewriteRuleSet:rw] rule.a.requestHeader.X(A): expected a header name, got 'X(A)'",
        ],
    ),
    (
        "rewrite response variable in request",
        "[rewriteRuleSet:rw]\nrule.a.requestHeader.X-A = {http_resp_Server}\nrule.a.requestHeader.X-B = 1\n",
        [
            (
                "@2: [rewriteRuleSet:rw] rule.a.requestHeader.X-A: variable 'http_resp_Server' is only "
                "available in response headers"
            ),
        ],
    ),
    (
        "rewrite response condition guarding a request action",
        "[rewriteRuleSet:rw]\nrule.a.condition = {http_resp_Server} ~ x\nrule.a.requestHeader.X-A = 1\n",
        [
            (
                "@2: [rewriteRuleSet:rw] rule.a.condition: a condition on the response cannot guard "
                "requestHeader, modifiedPath or modifiedQueryString actions; put them in a rule of their own"
            ),
        ],
    ),
    (
        "rewrite capture without a condition on its variable",
        "[rewriteRuleSet:rw]\nrule.a.modifiedPath = /x/{var_uri_path_1}\n",
        [
            "@2: [rewriteRuleSet:rw] rule.a.modifiedPath: 'var_uri_path_1' refers to group 1 of a condition "
            "on 'var_uri_path', and this rule has no condition on 'var_uri_path'"
        ],
    ),
    (
        "rewrite header capture without a condition on that header",
        "[rewriteRuleSet:rw]\nrule.a.condition = {http_req_Accept} ~ (.*)\n"
        "rule.a.requestHeader.X-A = {http_req_User-Agent_1}\n",
        [
            "@3: [rewriteRuleSet:rw] rule.a.requestHeader.X-A: 'http_req_User-Agent_1' refers to group 1 of a "
            "condition on 'http_req_User-Agent', and this rule has no condition on 'http_req_User-Agent'"
        ],
    ),
    (
        "rewrite capture from another rule's condition",
        "[rewriteRuleSet:rw]\nrule.a.condition = {var_uri_path} ~ ^/(x)\nrule.a.requestHeader.X-A = 1\n"
        "rule.b.modifiedQueryString = p={var_uri_path_1}\n",
        [
            "@4: [rewriteRuleSet:rw] rule.b.modifiedQueryString: 'var_uri_path_1' refers to group 1 of a "
            "condition on 'var_uri_path', and this rule has no condition on 'var_uri_path'"
        ],
    ),
    (
        "rewrite modifiedPath from the response",
        "[rewriteRuleSet:rw]\nrule.a.modifiedPath = /{http_resp_Server}\n",
        [
            "@2: [rewriteRuleSet:rw] rule.a.modifiedPath: variable 'http_resp_Server' is only available "
            "in response headers"
        ],
    ),
    (
        "rewrite request header from the response status",
        "[rewriteRuleSet:rw]\nrule.a.requestHeader.X-A = {var_http_status}\n",
        [
            "@2: [rewriteRuleSet:rw] rule.a.requestHeader.X-A: variable 'var_http_status' is only available "
            "in response headers"
        ],
    ),
    (
        "rewrite response status condition guarding a path",
        "[rewriteRuleSet:rw]\nrule.a.condition = {var_http_status} ~ ^404$\nrule.a.modifiedPath = /x\n",
        [
            "@2: [rewriteRuleSet:rw] rule.a.condition: a condition on the response cannot guard "
            "requestHeader, modifiedPath or modifiedQueryString actions; put them in a rule of their own"
        ],
    ),
    (
        "rewrite modifiedPath with a query",
        "[rewriteRuleSet:rw]\nrule.a.modifiedPath = /buy?x=1\n",
        ["@2: [rewriteRuleSet:rw] rule.a.modifiedPath: expected a path, got '/buy?x=1' (it contains '?')"],
    ),
    (
        "rewrite modifiedQueryString with a space",
        "[rewriteRuleSet:rw]\nrule.a.modifiedQueryString = a=1 b=2\n",
        [
            "@2: [rewriteRuleSet:rw] rule.a.modifiedQueryString: expected a query string, got 'a=1 b=2' "
            "(it contains ' ')"
        ],
    ),
    (
        "rewrite reroute not a boolean",
        "[rewriteRuleSet:rw]\nrule.a.modifiedPath = /x\nrule.a.reroute = maybe\n",
        [
            "@3: [rewriteRuleSet:rw] rule.a.reroute: expected true or false (or yes/no, 1/0, Enabled/Disabled), got 'maybe'"
        ],
    ),
    (
        "rewrite reroute without modifiedPath",
        "[rewriteRuleSet:rw]\nrule.a.modifiedQueryString = a=1\nrule.a.reroute = true\n",
        ["@3: [rewriteRuleSet:rw] rule.a.reroute: reroute = true needs a modifiedPath to route by"],
    ),
    (
        "rewrite unknown cookie variable",
        "[rewriteRuleSet:rw]\nrule.a.requestHeader.X-A = {var_cookie_}\n",
        [
            f"@2: [rewriteRuleSet:rw] rule.a.requestHeader.X-A: unknown variable 'var_cookie_'; expected one of: {VARIABLES}"
        ],
    ),
    # --- [requestRoutingRule]
    (
        "rule type",
        "ruleType = Basik\n",
        ["@1: [requestRoutingRule:r1] ruleType: expected Basic, PathBasedRouting or Plugin, got 'Basik'"],
    ),
    (
        "rule priority",
        "priority = 20001\n",
        ["@1: [requestRoutingRule:r1] priority: expected 1..20000, got 20001"],
    ),
    (
        "rule dangling rewrite set",
        "rewriteRuleSet = rw\n",
        ["@1: [requestRoutingRule:r1] rewriteRuleSet: refers to rewriteRuleSet 'rw', which is not defined"],
    ),
    (
        "Basic rule with a rerouting rewrite set",
        "rewriteRuleSet = rw\n[rewriteRuleSet:rw]\nrule.a.modifiedPath = /x\nrule.a.reroute = true\n",
        [
            "@1: [requestRoutingRule:r1] rewriteRuleSet: rewrite rule 'a' of 'rw' has reroute = true, which "
            "only a PathBasedRouting rule can do (a Basic rule has no path map)"
        ],
    ),
    (
        "rule without listener",
        "[requestRoutingRule:r2]\nbackendAddressPool = pool\nbackendHttpSettings = settings\n",
        ["@1: [requestRoutingRule:r2] httpListener: required key is missing"],
    ),
    (
        "Basic rule without target",
        "[httpListener:l2]\nfrontendPort = http\nhostName = a.x\n[requestRoutingRule:r2]\nhttpListener = l2\n",
        [
            "@4: [requestRoutingRule:r2]: expected backendAddressPool and backendHttpSettings, or redirectConfiguration"
        ],
    ),
    (
        "Basic rule with pool and redirect",
        "redirectConfiguration = r\n[redirectConfiguration:r]\ntargetUrl = https://x.example/\n",
        [
            (
                "@1: [requestRoutingRule:r1] redirectConfiguration: expected either backendAddressPool and "
                "backendHttpSettings or redirectConfiguration, not both"
            )
        ],
    ),
    (
        "Basic rule with urlPathMap",
        "urlPathMap = m\n",
        [
            "@1: [requestRoutingRule:r1] urlPathMap: not allowed with ruleType Basic",
            "@1: [requestRoutingRule:r1] urlPathMap: refers to urlPathMap 'm', which is not defined",
        ],
    ),
    (
        "plugin options on a Basic rule",
        "plugin.weight = 3\n",
        ["@1: [requestRoutingRule:r1] plugin.weight: not allowed with ruleType Basic"],
    ),
    (
        "PathBasedRouting without map",
        "ruleType = PathBasedRouting\n",
        [
            "gw.ini:13: [requestRoutingRule:r1] urlPathMap: required for ruleType PathBasedRouting",
            "gw.ini:15: [requestRoutingRule:r1] backendAddressPool: not allowed with ruleType PathBasedRouting",
            "gw.ini:16: [requestRoutingRule:r1] backendHttpSettings: not allowed with ruleType PathBasedRouting",
        ],
    ),
    (
        "Plugin without plugin",
        "ruleType = Plugin\n",
        [
            "gw.ini:13: [requestRoutingRule:r1] plugin: required for ruleType Plugin",
        ],
    ),
    (
        "Plugin with redirect",
        (
            "ruleType = plugin\nplugin = canary\nredirectConfiguration = r\n"
            "[redirectConfiguration:r]\ntargetUrl = https://x.example/\n"
        ),
        [
            "@3: [requestRoutingRule:r1] redirectConfiguration: not allowed with ruleType Plugin",
        ],
    ),
    (
        "Plugin name",
        "ruleType = Plugin\nplugin = can ary\n",
        [
            (
                "@2: [requestRoutingRule:r1] plugin: expected a name of 1..80 letters, digits, '_', '.' or '-', "
                "got 'can ary'"
            ),
        ],
    ),
    (
        "priority on some rules only",
        (
            "priority = 10\n"
            "[httpListener:l2]\nfrontendPort = http\nhostName = a.x\n"
            "[requestRoutingRule:r2]\nhttpListener = l2\nbackendAddressPool = pool\nbackendHttpSettings = settings\n"
        ),
        ["@5: [requestRoutingRule:r2] priority: missing; rule 'r1' has a priority, so every rule needs one"],
    ),
    (
        "same priority twice",
        (
            "priority = 10\n"
            "[httpListener:l2]\nfrontendPort = http\nhostName = a.x\n"
            "[requestRoutingRule:r2]\nhttpListener = l2\nbackendAddressPool = pool\nbackendHttpSettings = settings\n"
            "priority = 10\n"
        ),
        ["@9: [requestRoutingRule:r2] priority: 10 is already used by rule 'r1'"],
    ),
    (
        "listener used by two rules",
        "[requestRoutingRule:r2]\nhttpListener = L1\nbackendAddressPool = pool\nbackendHttpSettings = settings\n",
        [
            (
                "@2: [requestRoutingRule:r2] httpListener: listener 'l1' is already used by rule 'r1'; "
                "each listener belongs to exactly one rule"
            )
        ],
    ),
    (
        "listener used by no rule",
        "[httpListener:l2]\nfrontendPort = http\nhostNames = a.x\n",
        [
            "@1: [httpListener:l2]: no requestRoutingRule uses this listener, so its requests could not be routed"
        ],
    ),
    (
        "listeners on one port with different protocols",
        (
            "[sslCertificate:c]\ncertificate = cert.pem\nprivateKey = key.pem\n"
            "[httpListener:l2]\nfrontendPort = http\nprotocol = Https\nsslCertificate = c\nhostNames = a.x\n"
            "[requestRoutingRule:r2]\nhttpListener = l2\nbackendAddressPool = pool\nbackendHttpSettings = settings\n"
        ),
        [
            (
                "@6: [httpListener:l2] protocol: listeners on frontendPort 'http' must share one protocol; "
                "expected Http (as listener 'l1'), got Https"
            )
        ],
    ),
    (
        "two basic listeners on one port",
        (
            "[httpListener:l2]\nfrontendPort = HTTP\n"
            "[requestRoutingRule:r2]\nhttpListener = l2\nbackendAddressPool = pool\nbackendHttpSettings = settings\n"
        ),
        [
            (
                "@2: [httpListener:l2] frontendPort: frontendPort 'http' already has a basic listener 'l1' "
                "(one without host names); give this one hostNames"
            )
        ],
    ),
    (
        "one host name on two listeners of a port",
        (
            "[httpListener:l2]\nfrontendPort = http\nhostNames = a.x, b.x\n"
            "[httpListener:l3]\nfrontendPort = http\nhostName = B.x\n"
            "[requestRoutingRule:r2]\nhttpListener = l2\nbackendAddressPool = pool\nbackendHttpSettings = settings\n"
            "[requestRoutingRule:r3]\nhttpListener = l3\nbackendAddressPool = pool\nbackendHttpSettings = settings\n"
        ),
        [
            "@6: [httpListener:l3] hostName: host name 'b.x' is already used by listener 'l2' on frontendPort 'http'"
        ],
    ),
]


def test_custom_error_pages_read_at_load(inTmp: Path) -> None:
    """The pages' bytes are in the model; a page that is not UTF-8 is refused."""
    writePki(inTmp)
    (inTmp / "p502.html").write_text("<p>désolé</p>", encoding="utf-8")
    (inTmp / "latin.html").write_bytes("<p>désolé</p>".encode("latin-1"))
    config = load(
        BASE.replace("port = 8080\n", "port = 8080\n\n[gateway]\ncustomErrorPage.502 = p502.html\n", 1)
    )
    (page,) = config.gateway.customErrorPages
    assert (page.status, page.path, page.body) == (502, str(inTmp / "p502.html"), "<p>désolé</p>".encode())
    assert errorsOf(BASE + "[gateway]\ncustomErrorPage.400 = latin.html\n") == [
        f"gw.ini:{BASE_LINES + 2}: [gateway] customErrorPage.400: {str(inTmp / 'latin.html')!r} is not UTF-8 text "
        "(it is served as text/html; charset=utf-8)"
    ]


@pytest.mark.parametrize(
    "snippet, expected", [(s, e) for _, s, e in MISTAKES], ids=[name for name, _, _ in MISTAKES]
)
def test_mistake(inTmp: Path, snippet: str, expected: list[str]) -> None:
    """Each mistake gives exactly the listed errors, in file order."""
    writePki(inTmp)
    assert snippetErrors(snippet) == [e.replace("{tmp}", str(inTmp)) for e in expand(expected)]


def test_mistakeNames() -> None:
    names = [name for name, _, _ in MISTAKES]
    assert len(names) == len(set(names))


def test_nothingToServe(inTmp: Path) -> None:
    assert errorsOf("") == [
        "gw.ini: no httpListener sections: nothing to serve",
        "gw.ini: no requestRoutingRule sections: nothing to serve",
    ]
    assert errorsOf("[gateway]\nworkers = 2\n") == [
        "gw.ini: no httpListener sections: nothing to serve",
        "gw.ini: no requestRoutingRule sections: nothing to serve",
    ]


def test_noRules(inTmp: Path) -> None:
    """Without any rule, "nothing to serve" says it; unused listeners are not listed as well."""
    assert errorsOf("[frontendPort:http]\nport = 80\n[httpListener:l1]\nfrontendPort = http\n") == [
        "gw.ini: no requestRoutingRule sections: nothing to serve"
    ]


def test_allErrorsAtOnce(inTmp: Path) -> None:
    """Every problem is reported in one go, in file order, whatever its kind."""
    text = """\
        [gateway]
        workers = 0

        [frontendPort:http]
        port = 0

        [frob:x]

        [probe:p1]
        interval = 0
        intervall = 5

        [httpListener:l1]
        frontendPort = http
        protocol = Htp

        [backendAddressPool:pool]
        backendAddresses = 10.0.0.4, 10.0.0.4

        [requestRoutingRule:r1]
        httpListener = l1
        backendAddressPool = pool
        backendHttpSettings = missing
        priority = 0
        priority = 1
        """
    with pytest.raises(ConfigError) as info:
        load(text)
    expected = [
        "gw.ini:2: [gateway] workers: expected 1..64 or auto, got 0",
        "gw.ini:5: [frontendPort:http] port: expected 1..65535, got 0",
        f"gw.ini:7: [frob:x]: unknown section kind 'frob'; expected one of: {KINDS}",
        "gw.ini:10: [probe:p1] interval: expected 1..86400 seconds, got 0",
        f"gw.ini:11: [probe:p1] intervall: unknown key 'intervall'; expected one of: {PROBE_KEYS}",
        "gw.ini:15: [httpListener:l1] protocol: expected Http or Https, got 'Htp'",
        "gw.ini:18: [backendAddressPool:pool] backendAddresses: address '10.0.0.4' is listed twice",
        (
            "gw.ini:23: [requestRoutingRule:r1] backendHttpSettings: refers to backendHttpSettings "
            "'missing', which is not defined"
        ),
        "gw.ini:25: [requestRoutingRule:r1] priority: duplicate key (first defined at gw.ini:24)",
    ]
    assert info.value.errors == expected
    assert str(info.value) == "\n".join(expected)


# ---------------------------------------------------------------------------
# whole configurations
# ---------------------------------------------------------------------------

DESIGN_EXAMPLE = """\
[gateway]
admin = tcp:9901:interface=127.0.0.1   ; optional: metrics, health, status page

[frontendPort:http]
port = 80                          ; or endpoint = <Twisted server endpoint string>

[frontendPort:https]
port = 443

[sslCertificate:main]
certificate = {certDir}/fullchain.pem
privateKey  = {certDir}/key.pem

[httpListener:appGatewayHttpListener]
frontendPort = http
protocol = Http                    ; Http | Https
hostNames =                        ; empty: basic listener; else multi-site (wildcards * ?)

[httpListener:appGatewayHttpsListener]
frontendPort = https
protocol = Https
sslCertificate = main

[backendAddressPool:ContosoServerPool]
backendAddresses = 10.0.0.4, 10.0.0.5:8080, app3.internal

[probe:contosoProbe]               ; optional; default probe otherwise
protocol = Http
host = 127.0.0.1
path = /
interval = 30
timeout = 30
unhealthyThreshold = 3
match.statusCodes = 200-399
match.body =

[backendHttpSettings:appGatewayBackendHttpSettings]
port = 80
protocol = Http                    ; Http | Https (end-to-end TLS)
cookieBasedAffinity = Disabled     ; Enabled | Disabled
affinityCookieName = ApplicationGatewayAffinity
requestTimeout = 20
probe = contosoProbe
hostName =                         ; host header override
connectionDraining = 0             ; seconds; 0 = off

[requestRoutingRule:rule1]
ruleType = Basic                   ; Basic | PathBasedRouting | Plugin
priority = 100
httpListener = appGatewayHttpsListener
backendAddressPool = ContosoServerPool
backendHttpSettings = appGatewayBackendHttpSettings
"""

# What Azure's HTTP-to-HTTPS article adds so that the Http listener is routed too.
HTTP_TO_HTTPS = """
[redirectConfiguration:httpToHttps]
redirectType = Permanent
targetListener = appGatewayHttpsListener

[requestRoutingRule:rule2]
priority = 200
httpListener = appGatewayHttpListener
redirectConfiguration = httpToHttps
"""


@pytest.fixture()
def certDir(inTmp: Path) -> Path:
    tls = inTmp / "tls"
    tls.mkdir()
    writePki(tls, cert="fullchain.pem")
    return tls


def test_designExampleAsWritten(certDir: Path) -> None:
    """
    DESIGN_EXAMPLE (the original design's sample) leaves appGatewayHttpListener without a rule, which
    is the one thing wrong with it.
    """
    assert errorsOf(DESIGN_EXAMPLE.format(certDir=certDir)) == [
        (
            "gw.ini:14: [httpListener:appGatewayHttpListener]: no requestRoutingRule uses this "
            "listener, so its requests could not be routed"
        )
    ]


def test_designExample(certDir: Path) -> None:
    """DESIGN_EXAMPLE, plus a rule for its Http listener, loads as written."""
    config = load(DESIGN_EXAMPLE.format(certDir=certDir) + HTTP_TO_HTTPS)
    assert config.path == "gw.ini"
    assert config.gateway.admin == "tcp:9901:interface=127.0.0.1"
    assert config.gateway.workers == 1
    assert config.gateway.affinitySecret is None
    assert {n: (p.endpoint, p.port) for n, p in config.frontendPorts.items()} == {
        "http": ("tcp:80", 80),
        "https": ("tcp:443", 443),
    }
    cert = config.sslCertificates["main"]
    assert (cert.certificate, cert.privateKey, cert.password) == (
        str(certDir / "fullchain.pem"),
        str(certDir / "key.pem"),
        None,
    )
    http = config.httpListeners["appGatewayHttpListener"]
    assert (http.frontendPort, http.protocol, http.hostNames, http.sslCertificate) == (
        "http",
        "Http",
        (),
        None,
    )
    https = config.httpListeners["appGatewayHttpsListener"]
    assert (https.protocol, https.sslCertificate) == ("Https", "main")
    assert config.backendAddressPools["ContosoServerPool"].backendAddresses == (
        BackendAddress("10.0.0.4"),
        BackendAddress("10.0.0.5", 8080),
        BackendAddress("app3.internal"),
    )
    probe = config.probes["contosoProbe"]
    assert (probe.host, probe.path, probe.interval, probe.timeout, probe.unhealthyThreshold) == (
        "127.0.0.1",
        "/",
        30.0,
        30.0,
        3,
    )
    assert probe.statusCodes == ((200, 399),)
    assert probe.body is None
    settings = config.backendHttpSettings["appGatewayBackendHttpSettings"]
    assert settings.probe == "contosoProbe"
    assert settings.hostName is None
    assert settings.cookieBasedAffinity is False
    assert settings.requestTimeout == 20.0
    assert settings.connectionDraining == 0.0
    rule1 = config.requestRoutingRules["rule1"]
    assert (rule1.ruleType, rule1.priority, rule1.httpListener) == (
        "Basic",
        100,
        "appGatewayHttpsListener",
    )
    assert (rule1.backendAddressPool, rule1.backendHttpSettings) == (
        "ContosoServerPool",
        "appGatewayBackendHttpSettings",
    )
    rule2 = config.requestRoutingRules["rule2"]
    assert rule2.redirectConfiguration == "httpToHttps"
    assert config.redirectConfigurations["httpToHttps"].targetListener == "appGatewayHttpsListener"
    assert summarize(config) == [
        "listener appGatewayHttpListener: Http on tcp:80 (basic)",
        "listener appGatewayHttpsListener: Https on tcp:443 (basic), sslCertificate main",
        (
            "rule rule1 (Basic, priority 100): appGatewayHttpsListener -> pool ContosoServerPool "
            "(3 members), settings appGatewayBackendHttpSettings"
        ),
        (
            "rule rule2 (Basic, priority 200): appGatewayHttpListener -> redirect httpToHttps "
            "(Permanent to listener appGatewayHttpsListener)"
        ),
    ]


def test_azureArticleNames(inTmp: Path) -> None:
    """The names from Azure's quickstart work as they are, with relative certificate paths."""
    writePki(inTmp, cert="cert.pfx.pem", encrypted=True)
    config = load(
        """\
        [frontendPort:appGatewayFrontendPort]
        port = 8080

        [frontendPort:appGatewayFrontendPortHttps]
        port = 8443

        [sslCertificate:appGatewaySslCert]
        certificate = cert.pfx.pem
        privateKey = key.pem
        password = Azure123456!

        [httpListener:appGatewayHttpListener]
        frontendPort = appGatewayFrontendPort
        protocol = Http

        [httpListener:appGatewayHttpsListener]
        frontendPort = appGatewayFrontendPortHttps
        protocol = Https
        sslCertificate = appGatewaySslCert

        [backendAddressPool:ContosoServerPool]
        backendAddresses = 10.0.0.4, 10.0.0.5

        [backendHttpSettings:appGatewayBackendHttpSettings]
        port = 80
        protocol = Http
        cookieBasedAffinity = Disabled

        [redirectConfiguration:httpToHttps]
        redirectType = Permanent
        targetListener = appGatewayHttpsListener
        includePath = true
        includeQueryString = true

        [requestRoutingRule:rule1]
        ruleType = Basic
        httpListener = appGatewayHttpsListener
        backendAddressPool = ContosoServerPool
        backendHttpSettings = appGatewayBackendHttpSettings

        [requestRoutingRule:rule2]
        httpListener = appGatewayHttpListener
        redirectConfiguration = httpToHttps
        """
    )
    assert list(config.httpListeners) == ["appGatewayHttpListener", "appGatewayHttpsListener"]
    assert list(config.requestRoutingRules) == ["rule1", "rule2"]
    assert config.sslCertificates["appGatewaySslCert"].password == "Azure123456!"
    assert config.sslCertificates["appGatewaySslCert"].certificate == str(inTmp / "cert.pfx.pem")
    assert summarize(config) == [
        "listener appGatewayHttpListener: Http on tcp:8080 (basic)",
        "listener appGatewayHttpsListener: Https on tcp:8443 (basic), sslCertificate appGatewaySslCert",
        (
            "rule rule1 (Basic): appGatewayHttpsListener -> pool ContosoServerPool (2 members), "
            "settings appGatewayBackendHttpSettings"
        ),
        (
            "rule rule2 (Basic): appGatewayHttpListener -> redirect httpToHttps "
            "(Permanent to listener appGatewayHttpsListener)"
        ),
    ]


def test_everyKind(inTmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A configuration using every kind and most keys: values are parsed,
    defaults apply where keys are absent or empty, references are stored as
    the sections spell their names, and written order is kept.
    """
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    writePki(inTmp)
    config = load(
        """\
        [Gateway]
        admin = unix:/run/agw-admin.sock
        affinitySecret = 0123456789abcdef
        workers = auto
        shutdownGracePeriod = 2m
        requestHeaderTimeout = 15s
        allowUnderscoresInHeaders = yes
        trustedProxies = 10.0.0.0/8,
            2001:db8::/32, 192.0.2.7

        [frontendPort:web]
        port = 8080
        interface = ::1

        [frontendPort:socket]
        endpoint = systemd:domain=INET6:index=0

        [frontendPort:alt]
        endpoint = tcp:port=8081:interface=127.0.0.1

        [frontendPort:alt2]
        port = 8081
        interface = 127.0.0.2

        [trustedRootCertificate:InternalCA]
        certificate = ca.pem

        [httpListener:site]
        frontendPort = WEB
        hostNames = WWW.Contoso.com, *.contoso.net

        [httpListener:legacy]
        frontendPort = web
        hostName = old.contoso.com

        [httpListener:sock]
        frontendPort = socket

        [httpListener:plug]
        frontendPort = alt
        protocol = http

        [backendAddressPool:web]
        backendAddresses =
            10.0.0.4,
            [fd00::4]:8080,
            web3.internal

        [backendAddressPool:empty]
        backendAddresses =

        [probe:ws]
        protocol = HTTPS
        pickHostNameFromBackendHttpSettings = Enabled
        path = /healthz
        port = 8443
        interval = 10
        timeout = 2.5
        unhealthyThreshold = 5
        match.statusCodes = 200-204, 301
        match.body = ok

        [backendHttpSettings:tls]
        port = 443
        protocol = Https
        cookieBasedAffinity = enabled
        affinityCookieName = AGW
        requestTimeout = 90
        probe = WS
        pickHostNameFromBackendAddress = yes
        connectionDraining = 60
        path = /api/
        trustedRootCertificates = internalca
        verifyCertificate = false
        webSocketIdleTimeout = 1h
        webSocketPingInterval = 30
        webSocketMaxMessageSize = 16M
        maxConnectionsPerServer = 0
        maxQueuedRequestsPerServer = 100
        queueTimeout = 500ms
        maxIdleConnectionsPerServer = 16
        idleConnectionTimeout = 2m

        [backendHttpSettings:plain]

        [redirectConfiguration:toSite]
        redirectType = found
        targetUrl = https://www.contoso.com/new
        includePath = no
        includeQueryString = 0

        [urlPathMap:siteMap]
        defaultBackendAddressPool = web
        defaultBackendHttpSettings = plain
        pathRule.video = /video/*, /vid* -> web, tls
        pathRule.old = /old/* -> redirect:TOSITE
        pathRule.api = /api/v1/status -> Empty, Plain

        [rewriteRuleSet:headers]
        rule.clientIp.requestHeader.X-Client-IP = {var_client_ip}:{var_client_port}
        rule.clientIp.requestHeader.Host = internal.contoso.com
        rule.hideServer.condition = {http_resp_Server} ~* ^apache
        rule.hideServer.condition.2 = {var_uri_path} !~ ^/debug
        rule.hideServer.responseHeader.Server =
        rule.hideServer.responseHeader.X-Served-By = {var_host}

        [requestRoutingRule:siteRule]
        ruleType = pathbasedrouting
        priority = 10
        httpListener = SITE
        urlPathMap = sitemap
        rewriteRuleSet = headers

        [requestRoutingRule:legacyRule]
        priority = 20
        httpListener = legacy
        redirectConfiguration = toSite

        [requestRoutingRule:sockRule]
        priority = 30
        httpListener = sock
        backendAddressPool = web
        backendHttpSettings = plain

        [requestRoutingRule:pluginRule]
        ruleType = Plugin
        priority = 40
        httpListener = plug
        plugin = canary
        plugin.weight = 10
        plugin.Header = X-Canary
        backendAddressPool = web
        backendHttpSettings = plain
        """
    )
    gateway = config.gateway
    assert gateway.admin == "unix:/run/agw-admin.sock"
    assert gateway.affinitySecret == b"0123456789abcdef"
    assert gateway.workers == 6
    assert gateway.shutdownGracePeriod == 120.0
    assert gateway.requestHeaderTimeout == 15.0
    assert gateway.allowUnderscoresInHeaders is True
    assert [str(n) for n in gateway.trustedProxies] == ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]
    assert [
        gateway.isTrustedProxy(a) for a in ("10.1.2.3", "::ffff:10.1.2.3", "2001:db8::9", "192.0.2.8", "junk")
    ] == [
        True,
        True,
        True,
        False,
        False,
    ]

    assert {n: (p.endpoint, p.port) for n, p in config.frontendPorts.items()} == {
        "web": ("tcp:8080:interface=\\:\\:1", 8080),
        "socket": ("systemd:domain=INET6:index=0", None),
        "alt": ("tcp:port=8081:interface=127.0.0.1", 8081),
        "alt2": ("tcp:8081:interface=127.0.0.2", 8081),
    }
    assert config.trustedRootCertificates["InternalCA"].certificate == str(inTmp / "ca.pem")

    site = config.httpListeners["site"]
    assert (site.frontendPort, site.hostNames) == ("web", ("www.contoso.com", "*.contoso.net"))
    assert config.httpListeners["legacy"].hostNames == ("old.contoso.com",)
    assert config.httpListeners["plug"].protocol == "Http"

    assert config.backendAddressPools["web"].backendAddresses == (
        BackendAddress("10.0.0.4"),
        BackendAddress("fd00::4", 8080),
        BackendAddress("web3.internal"),
    )
    assert config.backendAddressPools["empty"].backendAddresses == ()

    probe = config.probes["ws"]
    assert probe.protocol == "Https"
    assert probe.pickHostNameFromBackendHttpSettings is True
    assert probe.host is None
    assert (probe.path, probe.port, probe.interval, probe.timeout) == ("/healthz", 8443, 10.0, 2.5)
    assert probe.unhealthyThreshold == 5
    assert probe.statusCodes == ((200, 204), (301, 301))
    assert probe.body == "ok"

    tls = config.backendHttpSettings["tls"]
    assert (tls.port, tls.protocol, tls.cookieBasedAffinity, tls.affinityCookieName) == (
        443,
        "Https",
        True,
        "AGW",
    )
    assert (tls.requestTimeout, tls.probe, tls.pickHostNameFromBackendAddress) == (90.0, "ws", True)
    assert (tls.connectionDraining, tls.path, tls.trustedRootCertificates) == (
        60.0,
        "/api/",
        ("InternalCA",),
    )
    assert tls.verifyCertificate is False
    assert (tls.webSocketIdleTimeout, tls.webSocketPingInterval) == (3600.0, 30.0)
    assert tls.webSocketMaxMessageSize == 16 * 2**20
    assert (tls.maxConnectionsPerServer, tls.maxQueuedRequestsPerServer, tls.queueTimeout) == (0, 100, 0.5)
    assert (tls.maxIdleConnectionsPerServer, tls.idleConnectionTimeout) == (16, 120.0)
    plain = config.backendHttpSettings["plain"]
    assert plain == type(plain)(name="plain")
    assert (plain.maxConnectionsPerServer, plain.maxQueuedRequestsPerServer, plain.queueTimeout) == (
        128,
        4096,
        10.0,
    )

    redirect = config.redirectConfigurations["toSite"]
    assert (redirect.redirectType, redirect.targetUrl, redirect.targetListener) == (
        "Found",
        "https://www.contoso.com/new",
        None,
    )
    assert (redirect.includePath, redirect.includeQueryString) == (False, False)

    pathMap = config.urlPathMaps["siteMap"]
    assert (pathMap.defaultBackendAddressPool, pathMap.defaultBackendHttpSettings) == (
        "web",
        "plain",
    )
    assert pathMap.defaultRedirectConfiguration is None
    assert pathMap.pathRules == (
        PathRule("video", ("/video/*", "/vid*"), "web", "tls"),
        PathRule("old", ("/old/*",), redirectConfiguration="toSite"),
        PathRule("api", ("/api/v1/status",), "empty", "plain"),
    )

    assert config.rewriteRuleSets["headers"] == RewriteRuleSet(
        name="headers",
        rules=(
            RewriteRule(
                name="clientIp",
                requestHeaders=(
                    ("X-Client-IP", "{var_client_ip}:{var_client_port}"),
                    ("Host", "internal.contoso.com"),
                ),
            ),
            RewriteRule(
                name="hideServer",
                conditions=(
                    ("http_resp_Server", "^apache", True, False),
                    ("var_uri_path", "^/debug", False, True),
                ),
                responseHeaders=(("Server", None), ("X-Served-By", "{var_host}")),
            ),
        ),
    )

    rules = config.requestRoutingRules
    assert list(rules) == ["siteRule", "legacyRule", "sockRule", "pluginRule"]
    siteRule = rules["siteRule"]
    assert (siteRule.ruleType, siteRule.httpListener, siteRule.urlPathMap) == (
        "PathBasedRouting",
        "site",
        "siteMap",
    )
    assert siteRule.rewriteRuleSet == "headers"
    assert rules["legacyRule"].redirectConfiguration == "toSite"
    pluginRule = rules["pluginRule"]
    assert (pluginRule.ruleType, pluginRule.plugin) == ("Plugin", "canary")
    assert pluginRule.pluginOptions == (("weight", "10"), ("Header", "X-Canary"))
    assert (pluginRule.backendAddressPool, pluginRule.backendHttpSettings) == ("web", "plain")

    assert summarize(config) == [
        "listener site: Http on tcp:8080:interface=\\:\\:1 hostNames www.contoso.com,*.contoso.net",
        "listener legacy: Http on tcp:8080:interface=\\:\\:1 hostNames old.contoso.com",
        "listener sock: Http on systemd:domain=INET6:index=0 (basic)",
        "listener plug: Http on tcp:port=8081:interface=127.0.0.1 (basic)",
        (
            "rule siteRule (PathBasedRouting, priority 10): site -> urlPathMap siteMap (3 path rules), "
            "rewriteRuleSet headers"
        ),
        (
            "rule legacyRule (Basic, priority 20): legacy -> redirect toSite "
            "(Found to https://www.contoso.com/new)"
        ),
        "rule sockRule (Basic, priority 30): sock -> pool web (3 members), settings plain",
        (
            "rule pluginRule (Plugin, priority 40): plug -> plugin canary, fallback pool web "
            "(3 members), settings plain"
        ),
    ]


def test_defaults(inTmp: Path) -> None:
    """Absent and empty keys both give the model's defaults."""
    config = load(
        BASE + "[probe:p]\nhost =\nmatch.statusCodes =\n" + "[backendHttpSettings:s]\nprobe = p\nhostName =\n"
    )
    probe = config.probes["p"]
    assert probe == type(probe)(name="p")
    assert probe.host == "127.0.0.1"
    settings = config.backendHttpSettings["s"]
    assert settings == type(settings)(name="s", probe="p")
    assert config.requestRoutingRules["r1"].ruleType == "Basic"
    assert config.requestRoutingRules["r1"].priority is None


def test_commentsAndContinuations(inTmp: Path) -> None:
    """Comments after whitespace are stripped; '#' inside a value is kept."""
    config = load(
        BASE
        + "; a comment line\n"
        + "[probe:p]   # probe\n"
        + "match.body = a#b ; comment\n"
        + "match.statusCodes = 200,\n"
        + "    # comment inside a continued value\n"
        + "    204\n"
    )
    assert config.probes["p"].body == "a#b"
    assert config.probes["p"].statusCodes == ((200, 200), (204, 204))


@pytest.mark.parametrize(
    "content, mode, expected",
    [
        (
            b"0123456789abcdef0123\n",
            0o644,
            "[gateway] adminToken: {path} is readable or writable by others (mode 0644); "
            "make it readable by the service only (chmod 600, or 640 with a group of its own)",
        ),
        (
            b"short\n",
            0o600,
            "[gateway] adminToken: expected the file {path} to hold one token of 16..4096 printable "
            "ASCII characters without spaces, got 5 byte(s)",
        ),
        (
            b"two words 0123456789abcdef\n",
            0o600,
            "[gateway] adminToken: expected the file {path} to hold one token of 16..4096 printable "
            "ASCII characters without spaces, got 26 byte(s)",
        ),
        (b"0123456789abcdef0123\n", 0o640, None),
    ],
)
def test_adminTokenFile(inTmp: Path, content: bytes, mode: int, expected: str | None) -> None:
    """The token file is read at load: others may not read it, and it holds one token (never echoed)."""
    token = inTmp / "admin.token"
    token.write_bytes(content)
    token.chmod(mode)
    ini = inTmp / "gw.ini"
    ini.write_text(BASE + "[gateway]\nadmin = tcp:9901\nadminToken = admin.token\n")
    if expected is None:
        assert loadConfig(str(ini)).gateway.adminToken == content.strip()
        return
    with pytest.raises(ConfigError) as info:
        loadConfig(str(ini))
    assert info.value.errors == [f"{ini}:{BASE_LINES + 3}: " + expected.format(path=token)]


def test_an_ipv4_mapped_range_is_the_ipv4_range() -> None:
    """
    Addresses are compared IPv4-mapped as IPv4 (model.inNetworks); ranges
    written IPv4-mapped are read the same way, so a trusted proxy or an
    ipFilter range given as C{::ffff:10.0.0.0/104} holds 10.1.2.3.
    """
    import ipaddress

    from agwtx.config.model import GatewaySettings
    from agwtx.config.values import parseNetwork, parseNetworks

    assert parseNetwork("::ffff:10.0.0.0/104") == ipaddress.ip_network("10.0.0.0/8")
    assert parseNetwork("::ffff:0:0/96") == ipaddress.ip_network("0.0.0.0/0")
    assert parseNetwork("2001:db8::/32").version == 6
    settings = GatewaySettings(trustedProxies=parseNetworks("::ffff:127.0.0.0/104"))
    assert settings.isTrustedProxy("127.0.0.1") and settings.isTrustedProxy("::ffff:127.0.0.2")
    assert not settings.isTrustedProxy("10.0.0.1")
