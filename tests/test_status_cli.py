"""The operator's commands `status`, `sync` and `replay`, run in-process through `shared.cli.main`.

Each test gets an Azurite of its own (the CLI reads storage without a table prefix) and, for `sync`, both
simulators: the same settings an operator puts in local.settings.json.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from azure.storage.queue import QueueClient

from sandbox.azurite import Azurite
from sandbox.partner_center import PartnerCenterSim
from sandbox.salesforce import SalesforceSim
from shared.cli import main
from shared.models.records import DeadLetter
from shared.runtime import services
from shared.store import Store
from tests.fixtures.status import SECRET, seed


@pytest.fixture(autouse=True)
def _fresh_services() -> Iterator[None]:
    """The CLI builds its clients through the process-wide `services()`: each test starts from scratch."""
    services.cache_clear()
    yield
    services.cache_clear()


@pytest.fixture
def storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with Azurite() as azurite:
        monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
        yield azurite.connection_string


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """`python -m shared ARGS` in this process; returns (exit code, stdout, stderr). No local.settings.json."""

    def invoke(*args: str) -> tuple[int, str, str]:
        services.cache_clear()
        code = main(["--settings", str(tmp_path / "absent.json"), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def _messages(connection_string: str, queue: str) -> list[dict[str, object]]:
    client = QueueClient.from_connection_string(connection_string, queue)
    return [json.loads(base64.b64decode(m.content)) for m in client.receive_messages(max_messages=32)]


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("status", "sync", "replay"):
        with pytest.raises(SystemExit) as stopped:
            main([command, "--help"])
        assert stopped.value.code == 0
        assert f"usage: python -m shared {command}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stopped:
        main(["sync"])  # one of --referral / --opportunity is required
    assert stopped.value.code == 2 and "one of the arguments --referral --opportunity is required" in capsys.readouterr().err


def test_status_prints_the_report_readably_and_as_json(storage: str, run: Callable[..., tuple[int, str, str]]) -> None:
    import datetime as dt

    seed(Store.from_connection_string(storage), now=dt.datetime.now(dt.timezone.utc))

    code, out, err = run("status")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("Co-sell connector status, ")
    assert any(line.startswith("  ✔ Salesforce poll ") and "last success 1 min ago" in line for line in lines)
    # No Partner Center settings in this environment: the webhook line says which one is missing.
    assert any(line.startswith("  ✖ Webhook registration") and "PARTNER_CENTER_" in line for line in lines)
    assert "  links 3 · open create intents 1 · dead letters 2" in lines
    assert "  msg-relay-1  relay to https://relay.example/hook?code=***  5 tries, last failed 6 min ago" in lines
    assert SECRET not in out

    code, out, _ = run("status", "--json")
    report = json.loads(out)
    assert code == 0 and report["counts"]["dead_letters"] == 2 and len(report["sync_log"]) == 5
    assert SECRET not in out


def test_replay_one_then_all_requeues_the_work_and_removes_the_letters(storage: str,
                                                                       run: Callable[..., tuple[int, str, str]]) -> None:
    store = Store.from_connection_string(storage)
    for n in range(3):
        store.dead_letters.put(DeadLetter(kind="opportunity", key=f"opportunity-006{n}", reason="Salesforce 503",
                                          payload={"opportunity_id": f"006{n}", "source": "poll"}))
    store.dead_letters.put(DeadLetter(kind="webhook-forward", key="relay-1", reason="relay answered 503",
                                      payload={"url": f"https://relay.example/hook?code={SECRET}",
                                               "url_shown": "https://relay.example/hook?code=***", "body": "{}"}))

    code, out, _ = run("replay", "opportunity-0061")
    assert code == 0 and out == "re-queued opportunity-0061: opportunity 0061\n"
    assert store.dead_letters.get("opportunity-0061") is None
    assert _messages(storage, "opportunity-changes") == [{"opportunity_id": "0061", "source": "replay"}]

    code, out, err = run("replay", "--all")
    assert code == 0
    assert out.splitlines() == ["re-queued opportunity-0060: opportunity 0060",
                                "re-queued opportunity-0062: opportunity 0062",
                                "re-queued relay-1: relay to https://relay.example/hook?code=***",
                                "3 dead letter(s) re-queued"]
    assert "replaying: 100%" in err and "3/3" in err  # the progress bar, on stderr
    assert list(store.dead_letters.list()) == []
    assert sorted(m["opportunity_id"] for m in _messages(storage, "opportunity-changes")) == ["0060", "0062"]
    relayed = _messages(storage, "webhook-forward")
    assert relayed == [{"url": f"https://relay.example/hook?code={SECRET}", "body": "{}"}]  # the real URL, to relay
    assert SECRET not in out + err

    assert run("replay", "--all")[1] == "no dead letters: nothing to replay\n"
    code, out, err = run("replay", "opportunity-0061")
    assert (code, out, err) == (1, "", "error: no dead letter 'opportunity-0061'\n")


def test_sync_once_prints_what_moved_and_logs_it(storage: str, run: Callable[..., tuple[int, str, str]],
                                                 pc_sim: PartnerCenterSim,
                                                 sf_sim_factory: Callable[..., SalesforceSim],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sf = sf_sim_factory(multi_currency=True, currencies=["USD", "EUR"])
    for name, value in {**pc_sim.settings_env(), **sf.credentials.settings_env()}.items():
        monkeypatch.setenv(name, value)
    referral_id = pc_sim.create_incoming({"name": "Contoso – CLI sync 🚀", "details": {"dealValue": 10000}})["id"]

    code, out, err = run("sync", "--referral", referral_id)
    assert (code, err) == (0, "")
    headline = out.splitlines()[0]
    assert headline.startswith(f"PC → SF  created  referral {referral_id} ⇄ opportunity 006") and headline.endswith(" ms)")
    opportunity_id = headline.split("opportunity ")[1].split()[0]
    assert sf.record("Opportunity", opportunity_id)["Name"] == "Contoso – CLI sync 🚀"

    pc_sim.update_as_microsoft(referral_id, {"details": {"dealValue": 99000}})
    code, out, _ = run("sync", "--referral", referral_id, "--dry-run")
    assert code == 0 and "    deal value: 10000 → 99000  (to SF)" in out.splitlines()
    assert "dry run, nothing written" in out and sf.record("Opportunity", opportunity_id)["Amount"] == 10000

    code, out, _ = run("sync", "--opportunity", opportunity_id)
    assert code == 0 and out.splitlines()[0].startswith(f"PC → SF  updated  referral {referral_id} ⇄ opportunity {opportunity_id}")
    assert "    deal value: 10000 → 99000  (to SF)" in out.splitlines()
    assert sf.record("Opportunity", opportunity_id)["Amount"] == 99000

    code, out, _ = run("sync", "--referral", referral_id)
    assert code == 0 and "no change" in out.splitlines()[0]
    assert out.splitlines()[-1] == "    both sides already agree: nothing was written"

    log = Store.from_connection_string(storage).synclog.recent(10)
    assert [entry.outcome.value for entry in log] == ["updated", "created"]  # not the dry run, not "no change"

    code, out, err = run("sync", "--referral", "00000000-0000-4000-8000-00000000dead")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("error: Partner Center referrals GET ") and "answered 404" in err
