"""What the lab's instrumented gateways share: an HTTP server on a thread of its own, and a stop that flushes
their OpenTelemetry spans before the provider shuts down."""
from __future__ import annotations

import threading
from typing import Self


class Served:
    """Mixed into a gateway that sets ``self.server`` (an HTTP server) and ``self.provider`` (its tracer provider)."""

    def start(self) -> Self:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.provider.force_flush()
        self.provider.shutdown()
