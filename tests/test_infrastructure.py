"""A stage that fails (no login prompt, a wrong password, the trigger command failing) is an
infrastructure-error in report.json (LAVA's distinction: the test never ran), not interrupted;
the exit status stays the stage's (16) or the target command's (20).  Real ptys and a real
login dialogue (tests/test_target.py's fake target)."""

from __future__ import annotations

import json

import pytest

from kexectest.capture.session import run_session
from kexectest.errors import Exit, KexectestError
from reportschema import assert_valid_report
from test_target import PASSWORD, _opts, pty_target  # noqa: F401 - the fixture


def _report(tmp_path) -> tuple[dict, str]:
    runs = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    report = json.loads((runs[0] / "report.json").read_text())
    assert_valid_report(report)
    return report, (runs[0] / "summary.md").read_text()


@pytest.mark.parametrize("mode,kw,code,stop", [
    ("normal", {"login": "root", "password": "wrong", "command": "kexec-go"}, Exit.LAB_STAGE, "stage-failed"),
    ("silent", {"login": "root", "password": "never-asked-for", "command": "kexec-go", "login_timeout": 2},
     Exit.LAB_STAGE, "stage-failed"),
    ("normal", {"login": "root", "password": PASSWORD, "command": "kexec-fail now", "timeout": 30},
     Exit.TARGET_COMMAND, "command-failed"),
])
def test_stage_failure_is_infrastructure_error(pty_target, tmp_path, mode, kw, code, stop):  # noqa: F811
    con = pty_target(mode)
    with pytest.raises(KexectestError) as err:
        run_session(_opts(con.path, tmp_path, **kw))
    assert err.value.code == code
    report, summary = _report(tmp_path)
    assert report["verdict"] == "infrastructure-error" and report["stop_reason"] == stop
    assert report["summary"].startswith("infrastructure-error: ") and "interrupted" not in report["summary"]
    assert summary.startswith("## kexectest: infrastructure-error")
