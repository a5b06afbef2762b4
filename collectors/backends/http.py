"""HTTP for the backends that answer over HTTP (Tempo, Jaeger): one session, credentials from the
environment or files (never argv), TLS verified (a custom CA from the environment), and every failure the
user can fix said in one line (``BackendError``).

Per backend NAME (TEMPO, JAEGER): TRIAGE_<NAME>_BEARER_TOKEN[_FILE], or TRIAGE_<NAME>_USERNAME +
TRIAGE_<NAME>_PASSWORD[_FILE]; TRIAGE_<NAME>_CA names a CA bundle; ``?tls=1`` in the URL selects https.
"""
from __future__ import annotations

import os

import orjson

from .source import BackendError, Source, secret


class Http:
    def __init__(self, source: Source, name: str, default_port: int, env=os.environ):
        import requests

        self.name = name.capitalize()
        self.var = f"TRIAGE_{name.upper()}"
        p = source.parts
        tls = source.query("tls", "0") in ("1", "true")
        self.where = f"{p.hostname}:{p.port or default_port}"
        self.base = f"{'https' if tls else 'http'}://{self.where}"
        self.session = requests.Session()
        self.session.verify = env.get(f"{self.var}_CA") or True
        token = secret(env, f"{self.var}_BEARER_TOKEN")
        user = (env.get(f"{self.var}_USERNAME") or "").strip()
        password = secret(env, f"{self.var}_PASSWORD")
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        elif user:
            self.session.auth = (user, password or "")
        self.bytes_received = 0
        self.requests = 0

    def get_json(self, path: str, params: dict | None = None, missing=BackendError):
        """The decoded JSON answer; on HTTP 404, ``missing`` when it is a value (else the error)."""
        import requests

        try:
            r = self.session.get(self.base + path, params=params, timeout=(5, 120),
                                 headers={"Accept": "application/json"})
        except requests.exceptions.SSLError:
            raise BackendError(f"{self.name} at {self.where}: its TLS certificate is not trusted (set {self.var}_CA "
                               f"to the CA bundle that signed it)") from None
        except requests.exceptions.ConnectionError as exc:
            why = "connection refused" if "refused" in str(exc) else "cannot connect"
            raise BackendError(f"{self.name} at {self.where} is unreachable: {why}") from None
        except requests.exceptions.Timeout:
            raise BackendError(f"{self.name} at {self.where} did not answer {path} in time") from None
        self.requests += 1
        self.bytes_received += len(r.content)
        if r.status_code in (401, 403):
            raise BackendError(f"{self.name} at {self.where} refused the credentials (HTTP {r.status_code}); set "
                               f"{self.var}_BEARER_TOKEN, or {self.var}_USERNAME and {self.var}_PASSWORD "
                               f"(or the _FILE variants)")
        if r.status_code == 404 and missing is not BackendError:
            return missing
        if r.status_code >= 400:
            text = r.text.strip().splitlines()[0][:200] if r.text.strip() else ""
            raise BackendError(f"{self.name} at {self.where}: HTTP {r.status_code} for {path}" +
                               (f": {text}" if text else ""))
        try:
            return orjson.loads(r.content)
        except orjson.JSONDecodeError:
            raise BackendError(f"{self.name} at {self.where}: {path} did not answer JSON (is this {self.name}'s "
                               f"query port?)") from None

    def close(self) -> None:
        self.session.close()
