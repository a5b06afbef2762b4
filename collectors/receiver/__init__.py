"""The OTLP/HTTP trace receiver, in the order a request meets it:

- ``listen.py``: where it listens (``--otlp-listen``) and who may send (TLS, bearer token);
- ``admission.py``: the connections it holds and the budget of decoded bytes a request may take (503 beyond
  it), with the idle, read and body timeouts;
- ``payloads.py``: bodies decoded (identity, gzip) and parsed (protobuf, JSON) off the event loop;
- ``writer.py``: the single writer that commits a request's spans before it is answered 200 (isolating spans
  the store cannot hold; staging them with their arrival time in a live session);
- ``server.py``: the HTTP server (aiohttp) and its answers, ``Receiver``.

When staged spans join the analysis, and when they leave the live window, is the live session's policy
(sessions/staging.py), not the receiver's.
"""
from .listen import ListenError, exposure, parse_listen, token_from_env
from .payloads import parse_payload
from .server import Receiver, wait_until

__all__ = ["ListenError", "Receiver", "exposure", "parse_listen", "parse_payload", "token_from_env", "wait_until"]
