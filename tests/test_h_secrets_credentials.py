"""Prometheus credentials never show: not in 'prometheus stale: ...', not in stderr, not in the report, not in
`ps`. A loopback stub plays a proxy that answers 401 and echoes the request's headers in its body (as some
login pages and debugging proxies do); no real Prometheus is needed."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from triage.collectors import prometheus
from triage.collectors.prometheus import Credentials, PrometheusError, PrometheusSource
from conftest import ROOT
from promserver import Target

TOKEN = "tok-9f2c1e7a5b"
PASSWORD = "pw-77d1c3e0aa"


def echo_headers_401(handler):
    """A 401 whose body is the request's headers, Authorization first."""
    headers = dict(handler.headers)
    body = json.dumps({"Authorization": headers.pop("Authorization", None), **headers}).encode()
    return 401, body, {"Content-Type": "application/json", "WWW-Authenticate": "Bearer"}


@pytest.fixture
def echo():
    t = Target(echo_headers_401)
    yield t
    t.stop()


def triage(*args, env=None, timeout=60):
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_PROMETHEUS_")}
    full.update(env or {}, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "triage", *args], capture_output=True, text=True, env=full,
                          cwd=ROOT, timeout=timeout)


def test_a_token_with_a_trailing_newline_is_sent_stripped(echo, tmp_path):
    """A Kubernetes secret mounted as a file, or exported with $(cat ...), ends in a newline."""
    seen = []
    ok = Target(lambda h: (seen.append(h.headers.get("Authorization")) or 200,
                           json.dumps({"status": "success", "data": []}).encode(),
                           {"Content-Type": "application/json"}))
    try:
        for env in ({"TRIAGE_PROMETHEUS_BEARER_TOKEN": TOKEN + "\n"},
                    {"TRIAGE_PROMETHEUS_BEARER_TOKEN_FILE": str(tmp_path / "token")}):
            (tmp_path / "token").write_text(TOKEN + "\r\n")
            PrometheusSource(ok.url, credentials=Credentials.from_env(env)).present_metrics()
    finally:
        ok.stop()
    assert seen == [f"Bearer {TOKEN}"] * 2


@pytest.mark.parametrize("bad", ["zq9x7 w4", "zq9x7\nw4", "", "   \n"])
def test_a_token_a_header_cannot_carry_is_refused_without_showing_it(bad):
    with pytest.raises(ValueError) as exc:
        Credentials.from_env({"TRIAGE_PROMETHEUS_BEARER_TOKEN": bad} if bad else
                             {"TRIAGE_PROMETHEUS_BEARER_TOKEN_FILE": "/dev/null"})
    assert "TRIAGE_PROMETHEUS_BEARER_TOKEN" in str(exc.value)
    assert "zq9x7" not in str(exc.value) and "w4" not in str(exc.value)


def test_a_401_that_echoes_the_headers_does_not_put_the_token_in_the_error(echo):
    src = PrometheusSource(echo.url, credentials=Credentials(bearer=TOKEN), timeout_s=5)
    with pytest.raises(PrometheusError) as exc:
        src.present_metrics()
    msg = str(exc.value)
    assert "401" in msg and "credentials" in msg
    assert TOKEN not in msg and "Authorization" not in msg
    assert exc.value.__cause__ is None and exc.value.__context__ is None  # the client's error holds the body


def test_basic_auth_password_is_not_in_the_error(echo):
    src = PrometheusSource(echo.url, credentials=Credentials(basic=("alice", PASSWORD)), timeout_s=5)
    with pytest.raises(PrometheusError) as exc:
        src.present_metrics()
    import base64

    assert PASSWORD not in str(exc.value)
    assert base64.b64encode(f"alice:{PASSWORD}".encode()).decode() not in str(exc.value)


def test_live_headless_never_prints_the_token(echo):
    """The whole command: token with a newline from the environment, a 401 echoing headers; stderr and the
    JSON report hold no trace of it."""
    r = triage("live", "--otlp-listen", "off", "--prometheus", echo.url, "--for", "1s", "--settle", "0",
               "--refresh", "1s", "--format", "json", env={"TRIAGE_PROMETHEUS_BEARER_TOKEN": TOKEN + "\n"})
    assert "prometheus stale:" in r.stderr and "HTTP 401" in r.stderr, r.stderr
    assert TOKEN not in r.stderr and TOKEN not in r.stdout
    assert "Bearer" not in r.stderr


def test_userinfo_on_the_command_line_is_refused_and_not_repeated():
    for cmd in (["live", "--for", "1s"], ["capture", "--out", "never-written", "--for", "1s"]):
        r = triage(*cmd, "--otlp-listen", "off", "--prometheus", f"http://alice:{PASSWORD}@127.0.0.1:9/")
        assert r.returncode == 2, r.stderr
        assert PASSWORD not in r.stderr + r.stdout
        assert "TRIAGE_PROMETHEUS_USERNAME" in r.stderr and "TRIAGE_PROMETHEUS_PASSWORD" in r.stderr
    assert not (ROOT / "never-written").exists()


def test_the_source_refuses_userinfo_too_and_redacts_it_in_the_message():
    with pytest.raises(ValueError) as exc:
        PrometheusSource(f"https://alice:{PASSWORD}@prom.example:9090/", credentials=Credentials())
    assert PASSWORD not in str(exc.value) and "***@prom.example:9090" in str(exc.value)


@pytest.mark.parametrize("url,shown", [
    ("http://u:p@h:9090/x", "http://***@h:9090/x"),
    ("https://u@h/", "https://***@h/"),
    ("http://h:9090", "http://h:9090"),
    ("http://a:b@c@h/", "http://***@h/"),
])
def test_redact_url(url, shown):
    assert prometheus.redact_url(url) == shown


def test_a_bad_credential_file_is_a_usage_error_naming_the_file(tmp_path):
    bad = tmp_path / "token"
    bad.write_text(f"{TOKEN}\n{TOKEN}\n")  # two lines: not one token
    r = triage("live", "--otlp-listen", "off", "--prometheus", "http://127.0.0.1:9", "--for", "1s",
               env={"TRIAGE_PROMETHEUS_BEARER_TOKEN_FILE": str(bad)}, timeout=30)
    assert r.returncode == 2 and str(bad) in r.stderr and TOKEN not in r.stderr, r.stderr
