"""Hostile configuration: a mapping file with every kind of mistake, broken mapping files, malformed settings.

What an admin gets must be a list of problems (mapping) or one line naming the setting (settings), exit
code 1, never a Python traceback and never the value of a secret. The big mapping case runs the real
command line, `python -m shared validate-mapping`, as a separate process; the others call the same
`main()` in this process, where any exception escaping it would fail the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sandbox.partner_center import PartnerCenterSim
from shared.cli import main
from shared.settings import APP_ROOT

MAPPING_FILE = APP_ROOT / "mappings" / "salesforce.json"
SENTINEL = "SENTINEL-5c1e-settings-value"


def _default() -> dict[str, Any]:
    return json.loads(MAPPING_FILE.read_text(encoding="utf-8"))


def _every_mistake() -> tuple[dict[str, Any], dict[str, str]]:
    """The default mapping broken in every way a hand edit can break it; -> (document, {path: message part})."""
    doc = _default()
    opp = doc["opportunity"]["fields"]
    expected: dict[str, str] = {}

    def wrong(path: str, message: str) -> None:
        expected[path] = message

    doc["version"] = "one"; wrong("$.version", "1 was expected")                             # noqa: E702
    doc["surprise"] = {}; wrong("$", "'surprise' was unexpected")                                       # noqa: E702
    opp[0]["transform"] = None; wrong("$.opportunity.fields[0].transform", "None is not of type")      # noqa: E702
    opp[1]["direction"] = "sideways"; wrong("$.opportunity.fields[1].direction", "'sideways' is not one of")  # noqa: E702
    opp[2]["transform"] = "rot13"; wrong("$.opportunity.fields[2].transform", "unknown transform 'rot13'")  # noqa: E702
    opp[3]["referral"] = "details.closeDate"; wrong("$.opportunity.fields[3].referral", "unknown referral path")  # noqa: E702
    opp[4]["key"] = "name"; wrong("$.opportunity.fields[4].key", "duplicate key 'name'")                # noqa: E702
    opp[5]["table"] = "helpTable"; wrong("$.opportunity.fields[5].table", "unknown table 'helpTable'")   # noqa: E702
    opp[6]["maxLength"] = "long"; wrong("$.opportunity.fields[6].maxLength", "'long' is not of type")   # noqa: E702
    opp[7]["salesforce"] = ["Referral_Identifier__c"]; wrong("$.opportunity.fields[7].salesforce", "is not of type")  # noqa: E702
    opp[8]["direction"] = "both"; wrong("$.opportunity.fields[8].direction", "a link is built from the referral")  # noqa: E702
    opp.append(42); wrong("$.opportunity.fields[9]", "42 is not of type 'object'")                      # noqa: E702
    doc["account"]["fields"] = "Name"; wrong("$.account.fields", "'Name' is not of type 'array'")       # noqa: E702
    doc["contacts"]["fields"][2]["salesforce"] = ["Email"]                        # unhashable where a name belongs
    wrong("$.contacts.fields[2].salesforce", "is not of type 'string'")
    doc["contacts"]["referralList"] = "customerProfile.members"
    wrong("$.contacts.referralList", "is not a list in the referral")
    doc["solutions"]["sobject"] = 7; wrong("$.solutions.sobject", "7 is not of type 'string'")          # noqa: E702
    stages = doc["stages"]
    del stages["toSalesforce"]["Closed/Expired"]; wrong("$.stages.toSalesforce", "no stage for the referral status Closed/Expired")  # noqa: E702
    stages["toSalesforce"]["Active/Accepted"] = "Closed Won"
    wrong("$.stages.toSalesforce['Active/Accepted']", "Active/Accepted is accepted, but the stage 'Closed Won' is won")
    stages["toPartnerCenter"]["Needs Analysis"] = ["accepted"]                   # unhashable where a phase belongs
    wrong("$.stages.toPartnerCenter['Needs Analysis']", "is not one of")
    stages["notYetAccepted"] = "Closed Lost"; wrong("$.stages.notYetAccepted", 'must be an "open" stage')  # noqa: E702
    stages["onHold"] = ["Value Proposition", 3]; wrong("$.stages.onHold[1]", "3 is not of type 'string'")     # noqa: E702
    wrong("$.stages.onHold[0]", "a stage is synced or on hold, not both")
    table = doc["tables"]["assistanceRequestCode"]
    table["values"]["Unknown"] = ["Unknown"]                                     # unhashable where a value belongs
    wrong("$.tables.assistanceRequestCode.values.Unknown", "is not of type 'string'")
    table["values"]["GeneralOrOther"] = "ProofOfConceptOrDemo"
    wrong("$.tables.assistanceRequestCode.values.ProofOfConceptOrDemo", "reading it back is ambiguous")
    doc["countryAliases"] = ["Deutschland"]; wrong("$.countryAliases", "is not of type 'object'")      # noqa: E702
    create = doc["create"]["partnerCenter"]
    create["defaults"]["details.value"] = 1; wrong("$.create.partnerCenter.defaults['details.value']", "unknown referral path")  # noqa: E702
    create["required"][0]["path"] = "title"; wrong("$.create.partnerCenter.required[0].path", "unknown referral path title")  # noqa: E702
    return doc, expected


def test_validate_mapping_lists_every_mistake_and_exits_1_without_a_traceback(tmp_path: Path) -> None:
    document, expected = _every_mistake()
    bad = tmp_path / "every-mistake.json"
    bad.write_text(json.dumps(document), encoding="utf-8")

    run = subprocess.run([sys.executable, "-m", "shared", "--settings", str(tmp_path / "none.json"),
                          "validate-mapping", str(bad)], cwd=APP_ROOT, capture_output=True, text=True, timeout=60)

    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""
    lines = run.stderr.splitlines()
    assert lines[0].startswith(f"{bad}: ") and lines[0].endswith("problem(s)")
    problems = lines[1:]
    missing = {path: part for path, part in expected.items()
               if not any(line.strip().startswith(f"{path}: ") and part in line for line in problems)}
    assert missing == {}, "\n".join(problems)
    assert int(lines[0].rsplit(": ", 1)[1].split()[0]) == len(problems) >= len(expected)


@pytest.mark.parametrize(("content", "says"), [
    (b"", "not valid JSON"),
    (b"{\"version\": 1,,}", "not valid JSON: Expecting property name enclosed in double quotes at line 1"),
    (b"\xff\xfe\x00garbage", "cannot read the file"),
    (b"[1, 2, 3]", "a mapping is a JSON object"),
    (b"null", "a mapping is a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"opportunity": ' + b'{"a": ' * 900 + b"1" + b"}" * 900 + b"}", "problem"),
], ids=["empty", "syntax error", "not UTF-8", "array", "null", "nested too deep", "nested deep in a section"])
def test_a_broken_mapping_file_is_one_clear_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    content: bytes, says: str) -> None:
    broken = tmp_path / "broken.json"
    broken.write_bytes(content)
    assert main(["--settings", str(tmp_path / "none.json"), "validate-mapping", str(broken)]) == 1
    err = capsys.readouterr().err
    assert says in err and str(broken) in err


def test_a_mapping_path_that_is_a_folder_or_missing_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    none = str(tmp_path / "none.json")
    assert main(["--settings", none, "validate-mapping", str(tmp_path)]) == 1
    assert "cannot read the file" in capsys.readouterr().err
    assert main(["--settings", none, "validate-mapping", str(tmp_path / "missing.json")]) == 1
    assert "file not found" in capsys.readouterr().err


MALFORMED = {
    "COSELL_DRY_RUN": "maybe", "COSELL_MAX_ATTEMPTS": "lots", "COSELL_PC_RATE_LIMIT": "-1",
    "COSELL_SF_BUDGET_SHARE": "2", "COSELL_SF_POLL_OVERLAP_SECONDS": "-5",
    "PARTNER_CENTER_API_URL": "http://insecure.example", "SALESFORCE_LOGIN_URL": "ftp://login.example",
}


def test_malformed_settings_are_one_line_naming_each_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in MALFORMED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SALESFORCE_PASSWORD", SENTINEL)
    assert main(["--settings", str(tmp_path / "none.json"), "validate-mapping"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: setting "), captured.err
    for name in MALFORMED:
        assert f"setting {name}:" in lines[0], name
    for value in [*MALFORMED.values(), SENTINEL]:
        assert value not in lines[0].replace("must be an https:// URL", ""), value


@pytest.mark.parametrize(("connection_string", "says"), [
    ("garbage", "setting COSELL_STORAGE is not a storage connection string"),
    ("AccountName=cosell;AccountKey=", "setting COSELL_STORAGE is not a storage connection string"),
    (f"DefaultEndpointsProtocol=https;AccountName=cosell;AccountKey={SENTINEL}!;EndpointSuffix=core.windows.net",
     "setting COSELL_STORAGE: its AccountKey is not base64"),
], ids=["not a connection string", "empty key", "key not base64"])
def test_a_malformed_storage_connection_string_is_one_line(pc_sim: PartnerCenterSim, monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           connection_string: str, says: str) -> None:
    """webhook-status reads the token health from storage after asking Partner Center: the storage part says
    what is wrong with the setting in its line of the report, without the key."""
    for name, value in pc_sim.settings_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COSELL_STORAGE", connection_string)
    main(["--settings", str(tmp_path / "none.json"), "webhook-status"])
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["token"].startswith("unknown: " + says), report["token"]
    assert SENTINEL not in out and "\n" not in report["token"]


def test_the_host_refuses_a_malformed_storage_setting_in_one_line(tmp_path: Path) -> None:
    """The local Functions host (make run, the tests) resolves the queue triggers' connection at start."""
    env = {"COSELL_STORAGE": "garbage", "AzureWebJobsStorage": "UseDevelopmentStorage=true",
           "COSELL_SF_POLL_SCHEDULE": "0 0 0 1 1 *", "COSELL_PC_RECONCILE_SCHEDULE": "0 0 0 1 1 *", "PATH": "/usr/bin"}
    run = subprocess.run([sys.executable, "-m", "sandbox.host", "--port", "0", "--no-settings-file"], cwd=APP_ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    output = (run.stdout + run.stderr).strip()
    assert run.returncode == 2, output
    assert "Traceback" not in output and "COSELL_STORAGE" in output.splitlines()[-1], output
