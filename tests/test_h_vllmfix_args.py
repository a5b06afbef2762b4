"""The engine-settings remediation without a real vLLM: the arithmetic picks the lever that acts on each
rule's cause, the arguments file keeps its other lines, `[vllm]` is validated, and apply / restart / health /
rollback run against a stand-in serving unit (a loopback HTTP server whose /health reads the arguments file,
and a restart argv that counts restarts). The real vLLM loop is tests/test_h_vllmfix_demo.py."""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from triage.analyzers.constraints import ConstraintsError, load
from triage.cli.main import main
from triage.remediations import engine_args as ea
from triage.remediations import ledger

ARGS = "# the lab unit's engine arguments\n--max-num-seqs 8\n--num-gpu-blocks-override 12\n--no-enable-prefix-caching\n"


def measured(**kw):
    base = dict(requests=32, prompt_p95=780.0, output_p95=94.0, prompt_median=540.0, demand_peak=16, running_peak=2,
                ttft_p95_ms=9000.0, queue_p95_ms=8800.0, block_size=128, num_gpu_blocks=12)
    return ea.Measured(**{**base, **kw})


def test_kv_pressure_sizes_the_kv_cache_for_max_num_seqs_at_p95(tmp_path):
    f = tmp_path / "vllm.args"
    f.write_text(ARGS)
    p = ea.propose(f, "kv-cache-pressure", measured())
    # 8 sequences x ceil((780 + 94) / 128) = 8 x 7 = 56 blocks
    assert p.changes == {"--num-gpu-blocks-override": ["12", "56"]}
    assert any("8 × (780 + 94) = 6992 tokens" in line for line in p.arithmetic)
    assert p.new_text == ARGS.replace("override 12", "override 56")
    assert "---num-gpu-blocks-override 12\n+--num-gpu-blocks-override 56" in p.diff


def test_kv_pressure_in_bytes_scales_by_the_bytes_per_block(tmp_path):
    f = tmp_path / "vllm.args"
    f.write_text("--max-num-seqs 4\n--kv-cache-memory-bytes 1200\n")
    p = ea.propose(f, "kv-cache-pressure", measured())
    assert p.changes == {"--kv-cache-memory-bytes": ["1200", str(4 * 7 * 100)]}


def test_kv_pressure_without_a_size_flag_admits_what_the_cache_holds(tmp_path):
    f = tmp_path / "vllm.args"
    f.write_text("--max-num-seqs 8\n--gpu-memory-utilization 0.9\n")
    p = ea.propose(f, "kv-cache-pressure", measured(num_gpu_blocks=30))
    assert p.changes == {"--max-num-seqs": ["8", "4"]}  # floor(30 / 7)


def test_concurrency_cap_raises_max_num_seqs_to_the_demand_within_the_cache(tmp_path):
    f = tmp_path / "vllm.args"
    f.write_text("--max-num-seqs 1\n--max-num-batched-tokens 4\n")
    p = ea.propose(f, "concurrency-cap", measured(demand_peak=8, running_peak=1, num_gpu_blocks=7000))
    assert p.changes == {"--max-num-seqs": ["1", "8"], "--max-num-batched-tokens": ["4", "8"]}
    small = ea.propose(f, "concurrency-cap", measured(demand_peak=8, running_peak=1, num_gpu_blocks=35))
    assert small.changes["--max-num-seqs"] == ["1", "5"]  # floor(35 / 7) sequences fit


def test_long_prompt_blocking_chunks_prefills_and_leaves_the_token_budget(tmp_path):
    f = tmp_path / "vllm.args"
    f.write_text("--max-num-batched-tokens 2048\n")
    p = ea.propose(f, "long-prompt-blocking", measured(), {"median_prompt_tokens": 100})
    assert p.changes == {"--long-prefill-token-threshold": [None, "128"]}
    assert p.new_text == "--max-num-batched-tokens 2048\n--long-prefill-token-threshold 128\n"


def test_arguments_file_lines_must_be_one_argument():
    assert ea.argv_of(ARGS) == ["--max-num-seqs", "8", "--num-gpu-blocks-override", "12", "--no-enable-prefix-caching"]
    with pytest.raises(ValueError, match="line 1"):
        ea.parse_args_text("max-num-seqs 8\n")
    with pytest.raises(ValueError, match="line 2"):
        ea.parse_args_text("--enforce-eager\n--max-num-seqs=8 9\n")


def test_flag_equals_value_lines_are_rewritten_in_place(tmp_path):
    f = tmp_path / "vllm.args"
    f.write_text("--max-num-seqs=1  # the lab's cap\n--enforce-eager\n")
    p = ea.propose(f, "concurrency-cap", measured(demand_peak=4, running_peak=1, num_gpu_blocks=7000))
    assert p.changes == {"--max-num-seqs": ["1", "4"]}
    assert p.new_text == "--max-num-seqs 4\n--enforce-eager\n"


def test_vllm_section_is_validated(tmp_path):
    t = tmp_path / "triage.toml"
    t.write_text('[vllm]\nargs_file = "vllm.args"\nrestart = ["systemctl", "restart", "vllm"]\n'
                 'health_url = "http://127.0.0.1:8000/health"\ntimeout_s = 120\n')
    assert load(t).vllm["restart"] == ["systemctl", "restart", "vllm"]
    t.write_text('[vllm]\nrestart = "systemctl restart vllm"\n')
    with pytest.raises(ConstraintsError, match="vllm.restart.*array of text"):
        load(t)
    t.write_text('[vllm]\nhealth_url = "file:///etc/passwd"\n')
    with pytest.raises(ConstraintsError, match="http"):
        load(t)


@pytest.fixture
def unit(tmp_path):
    """A stand-in serving unit: /health is 200 unless the arguments file holds `--num-gpu-blocks-override 0`;
    the restart argv appends a line to a file."""
    args = tmp_path / "unit" / "vllm.args"
    args.parent.mkdir()
    args.write_text(ARGS)
    restarts = tmp_path / "restarts"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            bad = ("--num-gpu-blocks-override", "0") in ea.parse_args_text(args.read_text())
            self.send_response(503 if bad else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    restart = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('restart\\n')", str(restarts)]
    yield args, ea.Unit(restart, f"http://127.0.0.1:{srv.server_address[1]}/health", timeout_s=3), restarts
    srv.shutdown()
    srv.server_close()


def test_apply_restarts_and_rollback_restores_byte_identical(unit, capsys):
    args, u, restarts = unit
    original = args.read_bytes()
    p = ea.propose(args, "kv-cache-pressure", measured())
    entry = ea.apply(p, u)
    assert args.read_text() == p.new_text and restarts.read_text() == "restart\n"
    assert entry["restart"] == u.restart and entry["action"] == ea.KIND
    assert main(["rollback", entry["id"]]) == 0
    assert args.read_bytes() == original and restarts.read_text() == "restart\n" * 2
    assert "restarted the server (healthy again)" in capsys.readouterr().out
    assert not list(args.parent.glob("*.triage-backup-*"))
    assert main(["rollback", entry["id"]]) != 0  # once only


def test_a_start_that_never_gets_healthy_rolls_back_by_itself(unit):
    args, u, restarts = unit
    original = args.read_bytes()
    bad = ea.Proposal("kv-cache-pressure", str(args), ARGS, ARGS.replace("override 12", "override 0"),
                      {"--num-gpu-blocks-override": ["12", "0"]})
    with pytest.raises(ea.StartFailed, match="restored the previous ones"):
        ea.apply(bad, u)
    assert args.read_bytes() == original and restarts.read_text() == "restart\n" * 2
    entries = ledger.entries(args.parent / ledger.LEDGER_NAME)
    assert [e["action"] for e in entries] == [ea.KIND, "rollback"] and entries[1]["healthy"] is True


def test_rollback_refuses_an_arguments_file_changed_since(unit):
    args, u, _ = unit
    entry = ea.apply(ea.propose(args, "kv-cache-pressure", measured()), u)
    args.write_text(args.read_text() + "--max-model-len 512\n")
    assert main(["rollback", entry["id"]]) != 0
    assert "--max-model-len 512" in args.read_text()


def test_demo_json_shape_is_declared():
    # the keys `triage demo --stack vllm --format json` promises in before/after
    from triage.lab.loadgen import LLMResult
    import numpy as np

    r = LLMResult(2, 2, 0, 1.0, np.array([10.0, 20.0]), np.array([1.0, 2.0]), np.array([30.0, 40.0]), 8)
    s = r.summary()
    assert {"ttft_p95_ms", "itl_p95_ms", "p95_ms", "throughput_tok_s", "error_rate"} <= set(s)
    assert json.dumps(s)


def test_engine_args_command_on_the_real_vllm_capture(unit, tmp_path, capsys):
    """`triage engine-args CAPTURE --apply` on the recorded vLLM capture (14 KV blocks, --max-num-seqs 8):
    kv-cache-pressure first, the KV blocks sized from its own p95 lengths, applied through [vllm], undone."""
    from conftest import ROOT

    args, u, restarts = unit
    args.write_text("--max-num-seqs 8\n--num-gpu-blocks-override 14\n")
    original = args.read_bytes()
    toml = args.parent / "triage.toml"
    toml.write_text(f'[vllm]\nargs_file = "{args.name}"\nrestart = {json.dumps(u.restart)}\n'
                    f'health_url = "{u.health_url}"\ntimeout_s = 3\n')
    capture = ROOT / "tests" / "fixtures" / "captures" / "vllm-gateway-mixed"
    assert main(["engine-args", str(capture), "--constraints", str(toml), "--apply", "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["finding"]["rule"] == "kv-cache-pressure"
    # 8 sequences x ceil((729 + 107) / 128) blocks: the capture's p95 prompt and output tokens
    assert r["proposal"]["changes"] == {"--num-gpu-blocks-override": ["14", "56"]}
    assert args.read_text() == "--max-num-seqs 8\n--num-gpu-blocks-override 56\n" and restarts.exists()
    assert main(["rollback", r["applied"]["ledger_id"]]) == 0
    assert args.read_bytes() == original


def test_demo_stack_and_incident_must_match(capsys):
    assert main(["demo", "--incident", "kv-pressure"]) == 2
    assert "a vLLM incident (add --stack vllm)" in capsys.readouterr().err
    assert main(["demo", "--stack", "vllm", "--incident", "overload"]) == 2
    assert "--stack vllm has the incidents kv-pressure, concurrency-cap" in capsys.readouterr().err
