"""
Running a fleet: readiness and the lame duck period, one view of a
multi-process instance, following the config file, against the real twistd
gateway.
"""

from __future__ import annotations

import http.client
import os
import signal
from pathlib import Path

from tests.support import (
    TWISTD,
    Proc,
    basicIni,
    freePort,
    httpGet,
    refused,
    sampleValue,
    startBackend,
    startGateway,
    waitFor,
    waitForPort,
)


def test_ready_turns_503_on_sigterm_while_the_lame_duck_still_serves(tmp_path: Path) -> None:
    b, pb = startBackend(tmp_path, "A")
    port, admin = freePort(), freePort()
    gateway = f"admin = tcp:{admin}:interface=127.0.0.1\nlameDuckPeriod = 4s\nshutdownGracePeriod = 5"
    gw = startGateway(tmp_path, basicIni(port, [pb], gateway=gateway), port)
    try:
        assert httpGet(admin, "/ready") == (200, b'{\n  "ready": true\n}\n')
        assert httpGet(admin, "/status/")[0] == 302  # the pages below keep their paths
        assert httpGet(admin, "/health/")[0] == 200
        assert httpGet(port)[0] == 200
        gw.proc.send_signal(signal.SIGTERM)
        waitFor(lambda: httpGet(admin, "/ready")[0] == 503, what="/ready at 503")
        # A lame duck: new connections are still accepted and served.
        served = httpGet(port)
        assert gw.proc.poll() is None, "the gateway stopped before the request was answered"
        assert served == (200, b"Hello from agw demo backend A\n")
        assert gw.proc.wait(20) == 0
        assert refused(port)
        assert "lame duck for 4s" in gw.output()
    finally:
        gw.stop()
        b.stop()


def test_metrics_health_and_status_with_two_workers_count_every_process(tmp_path: Path) -> None:
    import json

    b, pb = startBackend(tmp_path, "A")
    port, admin = freePort(), freePort()
    gw = startGateway(
        tmp_path,
        basicIni(port, [pb], gateway=f"workers = 2\nadmin = tcp:{admin}:interface=127.0.0.1"),
        port,
    )
    try:
        # Each process counts the requests it answered (the admin socket of
        # a worker says whose they were): send until both have answered some.
        sent = 0

        def perProcess() -> list[int]:
            doc = json.loads(httpGet(admin, "/status.json")[1])
            return [p["counters"].get("requests", {}).get("2xx", 0) for p in doc["processes"]]

        def workerUp() -> bool:
            doc = json.loads(httpGet(admin, "/status.json")[1])
            return [p["reachable"] for p in doc["processes"]] == [True, True]

        # The admin endpoint may bind after the frontend port startGateway waited for (seen on PyPy).
        waitForPort(admin, gw.proc)
        waitFor(workerUp, timeout=20, what="the worker answers")
        while min(perProcess()) == 0 and sent < 400:
            for _ in range(10):
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("GET", "/")
                assert c.getresponse().read() == b"Hello from agw demo backend A\n"
                c.close()
                sent += 1
        counts = perProcess()
        assert min(counts) > 0 and sum(counts) == sent, (counts, sent)
        body = httpGet(admin, "/metrics")[1].decode()
        assert (
            sampleValue(body, 'agw_requests_total{listener="l1",pool="pool",rule="r1",status="2xx"}') == sent
        )
        assert sampleValue(body, 'agw_request_duration_seconds_count{listener="l1",rule="r1"}') == sent
        # Member health is a per-process state: one series per worker.
        member = f'member="127.0.0.1:{pb}",pool="pool",settings="s1"'
        assert f'agw_backend_health{{{member},worker="0"}}' in body
        assert f'agw_backend_health{{{member},worker="1"}}' in body
        status = json.loads(httpGet(admin, "/status.json")[1])
        assert status["counters"]["requests"]["2xx"] == sent
        health = json.loads(httpGet(admin, "/health")[1])
        assert [w["worker"] for w in health["workers"]] == [1]
        assert health["workers"][0]["backendAddressPools"][0]["backendAddressPool"] == {"name": "pool"}
        assert "backendAddressPools" in health  # Azure's shape for the serving process
        page = httpGet(admin, "/status")[1].decode()
        assert "<html" in page.lower()
    finally:
        gw.proc.send_signal(signal.SIGTERM)
        gw.proc.wait(20)
        gw.stop()
        b.stop()


def test_watch_config_follows_the_kubernetes_symlink_swap_and_ignores_invalid_files(tmp_path: Path) -> None:
    """
    The layout Kubernetes mounts a ConfigMap as: gw.ini -> ..data/gw.ini,
    ..data -> ..TIMESTAMP/; an update writes a new directory and replaces
    the ..data symlink atomically (rename).
    """
    a, pa = startBackend(tmp_path, "A")
    b, pb = startBackend(tmp_path, "B")
    port = freePort()
    mount = tmp_path / "config"
    mount.mkdir()
    generation = [0]

    def publish(text: str) -> None:
        generation[0] += 1
        version = mount / f"..v{generation[0]}"
        version.mkdir()
        (version / "gw.ini").write_text(text)
        (mount / "..data_tmp").symlink_to(version.name)
        os.replace(mount / "..data_tmp", mount / "..data")

    publish(basicIni(port, [pa], gateway="watchConfig = true"))
    (mount / "gw.ini").symlink_to("..data/gw.ini")
    gw = Proc(
        [TWISTD, "-n", "--pidfile=", "agw", "--config", str(mount / "gw.ini")],
        tmp_path / "gw.log",
    )
    try:
        waitForPort(port, gw.proc)
        assert httpGet(port)[1] == b"Hello from agw demo backend A\n"
        publish(basicIni(port, [pb], gateway="watchConfig = true"))
        waitFor(lambda: httpGet(port)[1] == b"Hello from agw demo backend B\n", what="reload on the swap")
        # An invalid file is logged and changes nothing (and is not retried).
        publish(basicIni(port, [pa], gateway="watchConfig = true") + "\n[probe:p1]\ninterval = 0\n")
        waitFor(lambda: "reload rejected" in gw.output(), what="the rejection")
        assert "[probe:p1] interval: expected 1..86400" in gw.output()
        assert httpGet(port)[1] == b"Hello from agw demo backend B\n"
        # An edit in place of the file the symlinks lead to is seen too.
        target = mount / "..data" / "gw.ini"
        target.write_text(basicIni(port, [pa], gateway="watchConfig = true"))
        waitFor(lambda: httpGet(port)[1] == b"Hello from agw demo backend A\n", what="reload on the edit")
        assert gw.output().count("reload rejected: 1 error(s)") == 1
        assert gw.proc.poll() is None
    finally:
        gw.stop()
        a.stop()
        b.stop()


def test_watch_config_watches_every_file_the_config_reads() -> None:
    from agwtx.config.model import (
        CustomErrorPage,
        GatewayConfig,
        GatewaySettings,
        HttpListener,
        SslCertificate,
        TrustedClientCertificate,
        TrustedRootCertificate,
    )
    from agwtx.ops.watch import watchedFiles

    config = GatewayConfig(
        path="/etc/agw/gw.ini",
        gateway=GatewaySettings(customErrorPages=(CustomErrorPage(502, "/p/502.html", b"x"),)),
        sslCertificates={"c": SslCertificate("c", "/t/c.pem", "/t/c.key")},
        trustedRootCertificates={"r": TrustedRootCertificate("r", "/t/root.pem")},
        trustedClientCertificates={"m": TrustedClientCertificate("m", "/t/clients.pem")},
        httpListeners={
            "l": HttpListener("l", "fp", customErrorPages=(CustomErrorPage(504, "/p/l-504.html", b"y"),))
        },
    )
    assert watchedFiles(config) == [
        "/etc/agw/gw.ini",
        "/t/c.pem",
        "/t/c.key",
        "/t/root.pem",
        "/t/clients.pem",
        "/p/502.html",
        "/p/l-504.html",
    ]
