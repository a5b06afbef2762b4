"""triage.toml: every key has a type and a range; every error names the file, the key and the key's own line
(in its own section), exits 2 and never shows a traceback (issue 11 and 12)."""
import pytest

from triage.analyzers import constraints
from triage.analyzers.constraints import ConstraintsError, load
from triage.analyzers.rules import default_thresholds, threshold_units
from conftest import SAMPLES
from triage.cli.main import main


def _report(tmp_path, capsys, text: str | bytes):
    f = tmp_path / "triage.toml"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    rc = main(["report", str(SAMPLES / "slow-tokenizer"), "--constraints", str(f), "--format", "json"])
    return rc, capsys.readouterr().err, str(f)


@pytest.mark.parametrize("text,line,key", [
    ("rules = 5\n", 1, "rules"),
    ("[rules]\npreprocessing-share = 5\n", 2, "rules.preprocessing-share"),
    ("stages = 5\n", 1, "stages"),
    ("[slo]\np95_ms = 300\nerror_rate = nan\n", 3, "slo.error_rate"),        # was a false slo-burn "at nanx"
    ("[slo]\np95_ms = -5\n", 2, "slo.p95_ms"),                               # was a critical
    ("[slo]\np99_ms = inf\n", 2, "slo.p99_ms"),
    ("[slo]\nerror_rate = 1.5\n", 2, "slo.error_rate"),
    ("[rules.tail-segment]\nratio = nan\n", 2, "rules.tail-segment.ratio"),  # silently turned the rule off
    ("[rules.preprocessing-share]\nshare = 5\n", 2, "rules.preprocessing-share.share"),
    ("[rules.slo-burn]\nmin_requests = 2.5\n", 2, "rules.slo-burn.min_requests"),
    ("[rules.queueing-growth]\nmin_correlation = -3\n", 2, "rules.queueing-growth.min_correlation"),
    ("[budget]\ntotal_ms = 0\n", 2, "budget.total_ms"),
    ("[budget]\nqueue_ms = -1\n", 2, "budget.queue_ms"),
    ("[scorecard]\nimpact = true\n", 2, "scorecard.impact"),
    ("[guardrails]\nmin_top1_agreement = 1.2\n", 2, "guardrails.min_top1_agreement"),
    ("[slo]\nowner = 5\n", 2, "slo.owner"),
    ("[stages]\n\"tokenize\" = 5\n", 2, "stages.tokenize"),
    ("[slo]\np95_ms = 300\n\n[rules.no-such-rule]\nx = 1\n", 4, "rules.no-such-rule"),  # was line "?"
])
def test_bad_values_name_file_key_and_line(tmp_path, capsys, text, line, key):
    rc, err, path = _report(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:{line}: {key}:" in err, err
    assert "Traceback" not in err


def test_a_file_that_is_not_utf8_is_named(tmp_path, capsys):
    rc, err, path = _report(tmp_path, capsys, b'[slo]\nowner = "caf\xe9"\n')
    assert rc == 2 and f"{path}:2:" in err and "UTF-8" in err


def test_good_values_at_the_edges_of_their_ranges_load(tmp_path):
    f = tmp_path / "triage.toml"
    f.write_text("[slo]\nerror_rate = 0\np95_ms = 0.5\n[budget]\nqueue_ms = 0\n"
                 "[rules.queueing-growth]\nmin_correlation = -1\nmin_buckets = 6\n[rules.preprocessing-share]\nshare = 1\n")
    c = load(f, default_thresholds(), threshold_units())
    assert c.slo == {"error_rate": 0, "p95_ms": 0.5}
    assert c.threshold("queueing-growth", "min_correlation", None) == -1


SECTIONS = """# owner and share appear in several sections: each error must point at the one in its own section
[slo]
owner = "sre"
p95_ms = 300

[budget]
owner = "serving"
total_ms = 800

[rules.io-share]
share = 0.3

[rules.preprocessing-share]
share = 0.2
"""


@pytest.mark.parametrize("line,new,key", [
    (7, 'owner = 5', "budget.owner"),
    (8, 'owner2 = 1', "budget.owner2"),
    (11, 'share = 7', "rules.io-share.share"),
    (14, 'share = 7', "rules.preprocessing-share.share"),
])
def test_errors_name_the_line_of_the_key_in_its_own_section(tmp_path, line, new, key):
    lines = SECTIONS.splitlines()
    lines[line - 1] = new
    f = tmp_path / "triage.toml"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConstraintsError) as exc:
        load(f, default_thresholds(), threshold_units())
    assert str(exc.value).startswith(f"{f}:{line}: {key}:"), str(exc.value)


def test_key_lines_follows_headers_dotted_keys_inline_tables_and_strings():
    text = '''top.a = 1
"quoted.key".b = 2
[s]
k = """
[not_a_header]
k2 = 3
"""
arr = [
  [1, 2],
]
[[items]]
name = "x"
[t . 'u v']
k = { inner = 1 }
'''
    lines = constraints.key_lines(text)
    assert lines[("top", "a")] == 1 and lines[("quoted.key", "b")] == 2
    assert lines[("s", "k")] == 4 and ("not_a_header",) not in lines and ("s", "k2") not in lines
    assert lines[("s", "arr")] == 8 and lines[("items", "name")] == 12
    assert lines[("t", "u v")] == 13 and lines[("t", "u v", "k")] == 14
