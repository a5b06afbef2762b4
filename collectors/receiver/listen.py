"""Where the OTLP receiver listens and who may send to it: ``--otlp-listen`` addresses, the bearer token, TLS,
the listening socket, and the rule that a receiver others can reach needs TLS and a token (or says it is
insecure)."""
from __future__ import annotations

import ipaddress
import os
import re
import socket
import ssl

from triage.errors import UsageError

DEFAULT_PORT = 4318
BACKLOG = 1024
TOKEN_ENV = "TRIAGE_OTLP_BEARER_TOKEN"


class ListenError(UsageError):
    """The receiver cannot listen where it was asked to (the message names the option to change)."""


def parse_listen(text: str) -> tuple[str, int] | None:
    """``--otlp-listen``: ``HOST:PORT``, ``[v6]:PORT``, ``HOST`` or ``[v6]`` (port 4318), ``:PORT`` or ``PORT``
    (127.0.0.1), ``off``."""
    t = (text or "").strip()
    if t.lower() in ("off", "none", ""):
        return None
    host, port = t, ""
    if t.startswith("["):
        m = re.fullmatch(r"\[([^\]]*)\](?::(.*))?", t)
        if not m or not m.group(1):
            raise ListenError(f"--otlp-listen {text!r}: an IPv6 address is written [ADDRESS]:PORT, e.g. [::1]:4318")
        host, port = m.group(1), m.group(2) or ""
    elif t.count(":") > 1:
        host = t  # a bare IPv6 address
    elif ":" in t:
        host, port = t.rsplit(":", 1)
    elif t.isdigit():
        host, port = "", t
    if port == "" and (t.endswith(":")):
        raise ListenError(f"--otlp-listen {text!r}: no port after ':' (HOST:PORT, [IPv6]:PORT, HOST, :PORT or off)")
    try:
        p = int(port) if port != "" else DEFAULT_PORT
    except ValueError:
        p = -1
    if not 0 <= p <= 65535:
        raise ListenError(f"--otlp-listen {text!r}: port {port!r} is not a number from 0 to 65535 "
                          "(HOST:PORT, [IPv6]:PORT, HOST, :PORT or off)")
    return (host or "127.0.0.1", p)


def token_from_env(environ=None) -> str | None:
    """The bearer token exporters must send: ``TRIAGE_OTLP_BEARER_TOKEN`` or the file named by
    ``TRIAGE_OTLP_BEARER_TOKEN_FILE`` (trailing whitespace, e.g. a mounted secret's newline, stripped)."""
    env = os.environ if environ is None else environ
    path = env.get(TOKEN_ENV + "_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read().rstrip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ListenError(f"{TOKEN_ENV}_FILE: cannot read {path}: {exc}") from exc
        if not value:
            raise ListenError(f"{TOKEN_ENV}_FILE: {path} is empty")
        return value
    value = (env.get(TOKEN_ENV) or "").rstrip()
    return value or None


def tls_context(cert: str, key: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ListenError(f"--otlp-tls-cert/--otlp-tls-key: cannot load {cert}"
                          f"{' and ' + key if key else ''}: {exc}") from exc
    return ctx


def bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"--otlp-listen: cannot resolve host {host!r}: {exc.strerror}") from exc
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        shown = f"[{addr[0]}]:{port}" if family == socket.AF_INET6 else f"{addr[0]}:{port}"
        if exc.errno == 98:  # EADDRINUSE
            raise ListenError(f"cannot receive OTLP on {shown}: the port is already in use (another triage, or an "
                              f"OpenTelemetry Collector?); choose another with --otlp-listen HOST:PORT, or "
                              f"--otlp-listen off") from exc
        raise ListenError(f"cannot receive OTLP on {shown}: {exc.strerror or exc}; choose another address with "
                          f"--otlp-listen HOST:PORT") from exc
    sock.setblocking(False)
    return sock


def resolve_host(host: str, port: int) -> str:
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][4][0]
    except socket.gaierror as exc:
        raise ListenError(f"--otlp-listen: cannot resolve host {host!r}: {exc.strerror}") from exc


def exposure(address: str, tls: bool, token: str | None, insecure: bool) -> str | None:
    """A receiver on a non-loopback address needs TLS and a bearer token, or ``--otlp-insecure`` (then the
    warning to print is returned). Raises ListenError otherwise."""
    if is_loopback(address):
        return None
    missing = [what for what, ok in (("TLS (--otlp-tls-cert/--otlp-tls-key)", tls),
                                     (f"a bearer token ({TOKEN_ENV} or {TOKEN_ENV}_FILE)", token)) if not ok]
    if not missing:
        return None
    if not insecure:
        raise ListenError(f"--otlp-listen {address}: a receiver others can reach needs {' and '.join(missing)}; "
                          "or pass --otlp-insecure to accept unauthenticated spans from the network")
    return (f"receiving OTLP on {address} without {' and '.join(missing)}: anyone who can reach this address "
            "can send spans (--otlp-insecure)")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False
