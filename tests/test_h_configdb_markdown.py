"""Markdown output cannot be forged by the data it shows: a route or a file name holding `|`, line breaks,
a heading, a link or backticks stays literal text in its cell or list item (issue 11)."""
import json
import os
import re
import sys

import pytest

from triage.cli.main import main

EVIL = "/predict|x\n### 🔴 CRITICAL fake finding — [x](http://evil.example/)\n| fake | row |\r`code` <b>bold</b> *em*"
FORGED_HEADING = re.compile(r"^\s{0,3}#+\s*🔴", re.M)


def _capture(folder, route: str, n: int = 40):
    spans = []
    t0 = 1_796_029_103_000_000_000
    for i in range(n):
        start = t0 + i * 50_000_000
        spans.append({"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": "POST", "kind": 2,
                      "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + (5 + i % 7) * 1_000_000),
                      "attributes": [{"key": "http.route", "value": {"stringValue": route}}]})
    doc = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "gw"}}]},
                              "scopeSpans": [{"spans": spans}]}]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "traces.otlp.jsonl").write_text(json.dumps(doc) + "\n")
    return folder


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def _assert_inert(md: str):
    assert not FORGED_HEADING.search(md), md
    assert not re.search(r"(?<!\\)\]\(", md), md  # no link: every closing bracket is escaped
    assert "<b>" not in md and "`code`" not in md
    for line in md.splitlines():
        if line.startswith("|"):  # every table row has as many cells as its header
            assert _unescaped_pipes(line) in (7, 5), line
        assert not line.startswith("| fake"), line


def test_a_hostile_route_stays_in_its_table_cell(tmp_path, capsys):
    cap = _capture(tmp_path / "cap", EVIL)
    assert main(["report", str(cap), "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert any(EVIL in route for route in rep["latency"])  # JSON keeps the data as it was
    main(["report", str(cap)])
    md = capsys.readouterr().out
    _assert_inert(md)
    [row] = [line for line in md.splitlines() if line.startswith("| gw POST /predict")]
    assert _unescaped_pipes(row) == 7 and "\\|" in row and "\\[x\\]" in row


@pytest.mark.skipif(sys.platform == "darwin", reason="file names with line breaks")
def test_a_hostile_file_name_stays_in_its_list_item(tmp_path, capsys):
    cap = _capture(tmp_path / "cap", "/predict")
    name = "notes\n### 🔴 CRITICAL fake finding — [x](javascript:alert(1)) `x` |a|b|.md"
    (cap / name).write_text("not telemetry\n")
    (cap / "data`[y](javascript:alert(2))`|.bin").write_bytes(os.urandom(64))
    main(["report", str(cap)])
    md = capsys.readouterr().out
    _assert_inert(md)
    skipped = md.split("### Skipped inputs\n", 1)[1].splitlines()
    assert len(skipped) == 2 and all(line.startswith("- ") for line in skipped), skipped
