"""A short fault campaign (benchmarks/soak.py, ~15 s): every kind of fault of issue 11 at once against a
receiver in its own process, next to a well-behaved client. No acknowledged span may be missing, the receiver's
memory stays under its stated bound, and each fault gets the answer OTLP prescribes."""
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import soak  # noqa: E402


def test_fault_campaign_loses_nothing_and_stays_bounded():
    res = soak.campaign(12, big_senders=2, big_mb=2, idle=200, timeouts_s=2)
    print(soak.table(res))
    kinds = res["kinds"]
    assert res["lost"] == 0 and res["acked_spans"] > 0
    assert res["peak_rss_mb"] <= res["rss_bound_mb"]
    assert res["budget_peak_mb"] <= res["budget_mb"]
    good = kinds["good (10 spans / 50 ms)"]["answers"]
    assert set(good) == {"200"} and good["200"] >= 20, good
    # not starved: the small client's typical request is answered while the faults run (its p99 swings with the
    # machine's load, 0.9-3.8 s here with other work on both cores; the table above and RESULTS.md have it)
    assert res["good_p50_ms"] < 1000
    expect = {"chunked body": {"200"}, "multi-member gzip": {"200"}, "wrong-shaped JSON": {"200"},
              "poison values": {"200", "400"}, "duplicates (same 5 spans)": {"200"}, "clock 20 min behind": {"200"},
              "bad Content-Length": {"400"}, "chunked 32 MiB (limit 16)": {"413", "503", "ConnectionError"},
              "gzip bomb (80 MiB)": {"413", "503"}, "gzip to 48 MiB (x4 at once)": {"200", "503"},
              "stalled body": {"408"}, "2 MB bodies (x2)": {"200", "503"}}  # 503: the budget is full (load)
    for kind, allowed in expect.items():
        assert kinds[kind]["tried"] > 0, kind
        assert set(kinds[kind]["answers"]) <= allowed, (kind, kinds[kind]["answers"])
    assert all(a.startswith("closed after") for a in kinds["unfinished headers"]["answers"])
    assert "Traceback" not in res["stderr"], res["stderr"]
