"""Engine spans whose gen_ai.latency.* values are not usable numbers (text, inf, NaN, negative, 1e300) must not
stop the analysis: such a value counts as absent, the good spans still give their stages and TTFT, and every
request's stages still add up to its end-to-end time."""
import json

import pytest

T0 = 1_700_000_000_000_000_000
# proto3 JSON writes a double's infinity and NaN as strings; the others are text or numbers out of range
BAD = [{"doubleValue": "Infinity"}, {"doubleValue": "NaN"}, {"stringValue": "inf"}, {"stringValue": "abc"},
       {"doubleValue": -5}, {"doubleValue": 1e300}]


def _span(i: int, v: dict) -> dict:
    attrs = [{"key": f"gen_ai.latency.{k}", "value": v}
             for k in ("time_in_queue", "time_in_model_prefill", "time_in_model_decode", "time_to_first_token")]
    attrs.append({"key": "gen_ai.usage.completion_tokens", "value": {"intValue": "5"}})
    return {"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": "llm_request", "kind": 2,
            "startTimeUnixNano": str(T0 + i * 10**9), "endTimeUnixNano": str(T0 + i * 10**9 + 10**8),
            "attributes": attrs}


def test_unusable_latency_attributes_count_as_absent(tmp_path):
    from triage.sessions.offline import analyze

    spans = [_span(i, v) for i, v in enumerate(BAD)]
    ok = _span(len(BAD), {"doubleValue": 0.01})  # queue, prefill, decode, TTFT: 10 ms each
    ok["attributes"][2]["value"] = {"doubleValue": 0.04}  # decode 40 ms over 4 gaps
    ok["attributes"][3]["value"] = {"doubleValue": 0.025}
    spans.append(ok)
    (tmp_path / "t.json").write_text(json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "vllm"}}]}, "scopeSpans": [{"spans": spans}]}]}))
    a = analyze([tmp_path])
    rep = a.report()
    assert [f["rule"] for f in rep["findings"] if f["severity"] == "error"] == []
    assert a.store.query("""SELECT q.trace_id FROM requests q JOIN request_stages s USING (trace_id, root_id)
                            GROUP BY q.trace_id, q.duration_ns HAVING sum(s.ns) <> q.duration_ns""") == []
    good_trace = f"{len(BAD) + 1:032x}"
    stages = dict(a.store.query("SELECT stage, ns FROM request_stages WHERE trace_id = ?", [good_trace]))
    assert stages == {"queue": 10_000_000, "prefill": 10_000_000, "decode": 40_000_000, "request": 40_000_000}
    lat = rep["latency"]["vllm llm_request"]
    # the 1e300 span is a finite number and stays; the others have no TTFT
    assert lat["ttft_requests"] == 2 and lat["ttft_p50_ms"] == pytest.approx((25 + 1e303) / 2)
    assert lat["itl_requests"] == 2
