"""`triage rollback ID` undoes a TorchServe batching change too (issue 13 noted it could not), after the
same ledger guard as every rollback. A small management API on loopback stands in for TorchServe's (the
real one is exercised by tests/test_torchserve.py): GET/DELETE /models/NAME, POST /models?url=...&..."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from triage.remediations import ledger
from triage.cli.main import main


@pytest.fixture
def management():
    state = {"clf": {"batch_size": 8, "max_batch_delay_ms": 50, "workers": 1}}
    calls = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            s = state.get(self.path.rsplit("/", 1)[-1])
            if s is None:
                return self._send(404, {"message": "no such model"})
            self._send(200, [{"batchSize": s["batch_size"], "maxBatchDelay": s["max_batch_delay_ms"],
                              "workers": [{}] * s["workers"]}])

        def do_DELETE(self):
            calls.append(("DELETE", self.path))
            state.pop(self.path.rsplit("/", 1)[-1], None)
            self._send(200, {})

        def do_POST(self):
            q = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            calls.append(("POST", q))
            state[q["url"].removesuffix(".mar")] = {"batch_size": int(q["batch_size"]),
                                                    "max_batch_delay_ms": int(q["max_batch_delay"]),
                                                    "workers": int(q["initial_workers"])}
            self._send(200, {})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", state, calls
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def _apply(url, beside):
    from triage.remediations.torchserve import Management, TorchServeBatching

    target = TorchServeBatching(Management(url), "clf", "clf.mar")
    proposal = {"before": {"batch_size": 8, "max_batch_delay_ms": 50, "workers": 1},
                "after": {"batch_size": 8, "max_batch_delay_ms": 0, "workers": 1}, "arithmetic": ["λ·W = 0.5"]}
    return target.apply(proposal, beside)


def test_triage_rollback_restores_a_torchserve_registration(management, tmp_path, monkeypatch, capsys):
    url, state, calls = management
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    beside = tmp_path / "ts"
    beside.mkdir()
    entry = _apply(url, beside)
    assert state["clf"]["max_batch_delay_ms"] == 0
    monkeypatch.chdir("/")
    assert main(["rollback", entry["id"]]) == 0, capsys.readouterr().err
    assert "registered clf again with batch_size 8, max_batch_delay_ms 50, workers 1" in capsys.readouterr().out
    assert state["clf"] == {"batch_size": 8, "max_batch_delay_ms": 50, "workers": 1}
    assert [e["action"] for e in ledger.entries(beside / ledger.LEDGER_NAME)] == ["batching-torchserve", "rollback"]
    assert main(["rollback", entry["id"]]) == 2 and "already rolled back" in capsys.readouterr().err


def test_a_changed_registration_or_a_forged_entry_is_refused(management, tmp_path, monkeypatch, capsys):
    url, state, calls = management
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    beside = tmp_path / "ts"
    beside.mkdir()
    entry = _apply(url, beside)
    state["clf"]["workers"] = 3  # someone scaled it since
    n = len(calls)
    assert main(["rollback", entry["id"]]) == 2
    assert "changed since" in capsys.readouterr().err and len(calls) == n  # nothing unregistered
    # the same entry only in the global ledger (a forgery, or a folder that is not where it was made)
    forged = {**entry, "id": "forgedts0001"}
    with open(ledger.global_ledger(), "ab") as fh:
        fh.write(json.dumps(forged).encode() + b"\n")
    assert main(["rollback", "forgedts0001"]) == 2
    assert "not in the ledger in" in capsys.readouterr().err and len(calls) == n


def test_rollback_finds_the_fix_by_the_entry_action_in_the_registry(management, tmp_path, monkeypatch, capsys):
    """`triage rollback` (cli → remediations/undo.py, as the TUI's `u`) reaches the TorchServe fix through
    registry.by_kind(), by the entry's action; an action no remediation writes is refused, naming those it
    undoes."""
    from triage.remediations import registry, torchserve

    url, state, calls = management
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    beside = tmp_path / "ts"
    beside.mkdir()
    entry = _apply(url, beside)
    assert entry["action"] == torchserve.KIND and registry.by_kind()[torchserve.KIND] is torchserve
    seen, real = [], torchserve.rollback
    monkeypatch.setattr(torchserve, "rollback", lambda entry_id, **kw: seen.append(entry_id) or real(entry_id, **kw))
    assert main(["rollback", entry["id"]]) == 0, capsys.readouterr().err
    assert seen == [entry["id"]] and state["clf"]["max_batch_delay_ms"] == 50
    other = ledger.rooted_entry("resize", beside)
    ledger.record(other, beside)
    assert main(["rollback", other["id"]]) == 2
    kinds = ", ".join(f"'{k}'" for k in registry.by_kind())  # every registered fix, named
    assert (f"{other['id']} is a 'resize' entry; `triage rollback` undoes {kinds} entries"
            in capsys.readouterr().err)
    assert "'batching-torchserve'" in kinds
