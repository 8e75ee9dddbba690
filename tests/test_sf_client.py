"""SalesforceClient against the simulator: logins, paging, Collections, composite, retries, budget, re-login."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.salesforce import SalesforceSim
from shared.errors import AuthExpired, ConfigError, InvalidInput, LimitExceeded, Unavailable
from shared.mapping import Mapping
from shared.salesforce import BUDGET_DOC, RetryPolicy, SalesforceClient, SubRequest
from shared.salesforce.auth import Grant, jwt_audience
from shared.settings import APP_ROOT, get_settings
from shared.store import Store

FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.02, timeout=10)


def opportunity(i: int, **fields: Any) -> dict[str, Any]:
    return {"Referral_Identifier__c": f"ref-{i:04d}", "Name": f"Deal {i}", "StageName": "Prospecting",
            "CloseDate": "2027-03-15", **fields}


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch) -> Callable[..., SalesforceClient]:
    """A client for a simulator, configured through the settings like the function app's."""

    def make(sim: SalesforceSim, *, store: Store | None = None, drop: tuple[str, ...] = (),
             **env: str) -> SalesforceClient:
        for name, value in {**sim.credentials.settings_env(), **env}.items():
            monkeypatch.setenv(name, value)
        for name in drop:
            monkeypatch.delenv(name, raising=False)
        get_settings.cache_clear()
        return SalesforceClient.from_settings(get_settings(), store=store, retry=FAST)

    return make


@pytest.fixture
def client(sf_sim: SalesforceSim, connect: Callable[..., SalesforceClient]) -> SalesforceClient:
    return connect(sf_sim)


def used(sim: SalesforceSim) -> int:
    return sim.org.api.used


def sandbox(sim: SalesforceSim, path: str, body: Any = None, method: str = "POST") -> Any:
    response = requests.request(method, f"{sim.url}/_sandbox/{path}", json=body, timeout=10)
    response.raise_for_status()
    return response.json() if response.content else None


@pytest.fixture
def responses(client: SalesforceClient) -> Iterator[list[int]]:
    """Status codes of every answer the client's session receives (after transport retries)."""
    seen: list[int] = []
    client.session.hooks["response"].append(lambda r, *a, **k: seen.append(r.status_code))
    yield seen


# Login -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("drop", "grant"), [
    ((), Grant.JWT_BEARER),
    (("SALESFORCE_PRIVATE_KEY",), Grant.PASSWORD),
    (("SALESFORCE_PRIVATE_KEY", "SALESFORCE_PASSWORD", "SALESFORCE_USERNAME"), Grant.CLIENT_CREDENTIALS),
])
def test_each_grant_logs_in_as_chosen_by_the_settings(sf_sim: SalesforceSim, connect: Callable[..., SalesforceClient],
                                                      drop: tuple[str, ...], grant: Grant) -> None:
    client = connect(sf_sim, drop=drop)
    assert client.credentials.grant is grant
    users = {u["Username"] for u in client.query("SELECT Username FROM User")}
    assert "integration@cosell.sandbox" in users
    assert "sandbox-password" not in repr(client.credentials) and "PRIVATE" not in repr(client.credentials)


def test_the_private_key_may_be_a_file_path(sf_sim: SalesforceSim, connect: Callable[..., SalesforceClient],
                                            tmp_path: Path) -> None:
    key = tmp_path / "jwt.key"
    key.write_text(sf_sim.credentials.private_key_pem)
    client = connect(sf_sim, SALESFORCE_PRIVATE_KEY=str(key))
    assert client.credentials.grant is Grant.JWT_BEARER
    assert next(client.query("SELECT Id FROM User LIMIT 1"))["Id"].startswith("005")


def test_login_problems_are_named(sf_sim: SalesforceSim, connect: Callable[..., SalesforceClient]) -> None:
    with pytest.raises(ConfigError, match="SALESFORCE_USERNAME"):
        connect(sf_sim, drop=("SALESFORCE_USERNAME",))
    with pytest.raises(ConfigError, match="no Salesforce login is configured"):
        connect(sf_sim, drop=("SALESFORCE_PRIVATE_KEY", "SALESFORCE_PASSWORD", "SALESFORCE_CLIENT_SECRET"))
    # Settings listed but left empty (as in local.settings.example.json) count as not set.
    assert connect(sf_sim, SALESFORCE_PRIVATE_KEY="", SALESFORCE_PASSWORD="").credentials.grant is Grant.CLIENT_CREDENTIALS
    with pytest.raises(ConfigError, match="SALESFORCE_CLIENT_ID is not set"):
        connect(sf_sim, SALESFORCE_CLIENT_ID="")
    with pytest.raises(ConfigError, match="neither PEM text nor a readable PEM file"):
        connect(sf_sim, SALESFORCE_PRIVATE_KEY="/nonexistent/key.pem")
    wrong = connect(sf_sim, drop=("SALESFORCE_PRIVATE_KEY",), SALESFORCE_PASSWORD="wrong")
    with pytest.raises(AuthExpired, match="authentication failure") as caught:
        list(wrong.query("SELECT Id FROM User"))
    assert "wrong" not in str(caught.value)
    bad_app = connect(sf_sim, drop=("SALESFORCE_PRIVATE_KEY",), SALESFORCE_CLIENT_ID="someone-else")
    with pytest.raises(ConfigError, match="invalid_client_id"):
        list(bad_app.query("SELECT Id FROM User"))


@pytest.mark.parametrize("login_url", ["https://login.salesforce.com", "https://TEST.salesforce.com/"])
def test_client_credentials_need_a_my_domain_url(sf_sim: SalesforceSim, connect: Callable[..., SalesforceClient],
                                                 login_url: str) -> None:
    """Refused before any call, in words that say what to set (Salesforce refuses the flow on those hosts)."""
    with pytest.raises(ConfigError, match="My Domain URL"):
        connect(sf_sim, drop=("SALESFORCE_PRIVATE_KEY", "SALESFORCE_PASSWORD"), SALESFORCE_LOGIN_URL=login_url)
    assert sf_sim.auth.tokens_issued == 0


def test_jwt_audience_follows_the_login_url() -> None:
    assert jwt_audience("https://login.salesforce.com") == "https://login.salesforce.com"
    assert jwt_audience("https://acme.my.salesforce.com") == "https://login.salesforce.com"
    assert jwt_audience("https://test.salesforce.com") == "https://test.salesforce.com"
    assert jwt_audience("https://acme--uat.sandbox.my.salesforce.com") == "https://test.salesforce.com"
    assert jwt_audience("https://127.0.0.1:8443/") == "https://127.0.0.1:8443"


def test_an_expired_session_is_renewed_once(sf_sim: SalesforceSim, client: SalesforceClient) -> None:
    list(client.query("SELECT Id FROM User"))
    logins = sf_sim.auth.tokens_issued
    sandbox(sf_sim, "sessions/expire", {})
    assert len(list(client.query("SELECT Id FROM User"))) == 2
    assert sf_sim.auth.tokens_issued == logins + 1
    # A session refused again right after the new login is not retried a second time.
    sandbox(sf_sim, "faults", {"kind": "status", "status": 401, "count": 2, "path": "/services/data/",
                               "body": [{"errorCode": "INVALID_SESSION_ID", "message": "Session expired"}]})
    with pytest.raises(AuthExpired, match="INVALID_SESSION_ID"):
        list(client.query("SELECT Id FROM User"))
    assert sf_sim.auth.tokens_issued == logins + 2


# Reading ---------------------------------------------------------------------------------------------

def test_query_pages_lazily_through_next_records_url(sf_sim_factory: Callable[..., SalesforceSim],
                                                     connect: Callable[..., SalesforceClient]) -> None:
    sim = sf_sim_factory(batch_size=3)
    for i in range(8):
        sim.create("Account", {"Name": f"Account {i}"})
    client = connect(sim)
    before = used(sim)
    rows = client.query("SELECT Id, Name FROM Account ORDER BY Name")
    first = [next(rows), next(rows)]
    assert used(sim) == before + 1  # only the first page was fetched
    assert [r["Name"] for r in first + list(rows)] == [f"Account {i}" for i in range(8)]
    assert used(sim) == before + 3
    assert "attributes" not in first[0]


def test_describe_is_read_once_and_tells_single_from_multi_currency_orgs(
        sf_sim_factory: Callable[..., SalesforceSim], connect: Callable[..., SalesforceClient]) -> None:
    single = connect(sf_sim_factory())
    schema = single.org_schema(["Opportunity", "No_Such_Object__c"])
    assert list(schema.objects) == ["Opportunity"]
    assert not schema.has_field("Opportunity", "CurrencyIsoCode")
    assert "Closed Won" in schema.field("Opportunity", "StageName").picklist
    multi_sim = sf_sim_factory(multi_currency=True)
    multi = connect(multi_sim)
    multi.describe("Opportunity")
    before = used(multi_sim)
    assert multi.describe("Opportunity").field("CurrencyIsoCode") is not None
    assert used(multi_sim) == before  # cached
    mapping_file = APP_ROOT / "mappings" / "salesforce.json"
    assert "currency" not in [f.key for f in Mapping.load(mapping_file, describe=single.org_schema).fields]
    assert "currency" in [f.key for f in Mapping.load(mapping_file, describe=multi.org_schema).fields]


# Writing ---------------------------------------------------------------------------------------------

def test_450_upserts_cost_exactly_3_collection_calls(sf_sim: SalesforceSim, client: SalesforceClient) -> None:
    client.describe("Opportunity")  # log in and warm up outside the measurement
    before = used(sf_sim)
    results = client.upsert("Opportunity", [opportunity(i) for i in range(450)])
    assert used(sf_sim) == before + 3
    assert len(results) == 450 and all(r.success and r.created for r in results)
    again = client.upsert("Opportunity", [opportunity(i, Amount=1000 + i) for i in range(450)])
    assert used(sf_sim) == before + 6
    assert [r.id for r in again] == [r.id for r in results] and not any(r.created for r in again)
    assert sf_sim.org.count("Opportunity") == 450
    assert sf_sim.query("SELECT Amount FROM Opportunity WHERE Referral_Identifier__c = 'ref-0449'")[0]["Amount"] == 1449


def test_results_are_per_record(sf_sim: SalesforceSim, client: SalesforceClient) -> None:
    records = [opportunity(0), opportunity(1, StageName="Not A Stage"), opportunity(2)]
    results = client.upsert("Opportunity", records)
    assert [r.success for r in results] == [True, False, True]
    error = results[1].error("upsert Opportunity")
    assert isinstance(error, InvalidInput) and "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" in str(error)
    assert results[0].error("upsert Opportunity") is None
    created = client.create("Account", [{"Name": "Fabrikam"}, {"BillingCity": "No name"}])
    assert created[0].success and created[0].id.startswith("001") and not created[1].success
    refused, deleted = client.delete([created[0].id, results[0].id])
    assert "INSUFFICIENT_ACCESS" in refused.errors[0].status_code  # the permission set keeps accounts
    assert deleted.success and sf_sim.org.count("Opportunity") == 1


def test_an_update_that_changes_nothing_is_never_sent(sf_sim: SalesforceSim, client: SalesforceClient) -> None:
    [result] = client.upsert("Opportunity", [opportunity(1)])
    stamp = sf_sim.record("Opportunity", result.id)["SystemModstamp"]
    before = used(sf_sim)
    [skipped] = client.update("Opportunity", [{"Id": result.id}])
    assert skipped.skipped and skipped.success and used(sf_sim) == before
    assert sf_sim.record("Opportunity", result.id)["SystemModstamp"] == stamp
    results = client.update("Opportunity", [{"Id": result.id}, {"Id": result.id, "Amount": 5}])
    assert [r.skipped for r in results] == [True, False] and results[1].success
    assert used(sf_sim) == before + 1 and sf_sim.record("Opportunity", result.id)["Amount"] == 5


def test_composite_runs_25_subrequests_a_call_and_keeps_references_across_calls(
        sf_sim: SalesforceSim, client: SalesforceClient) -> None:
    [opp] = client.upsert("Opportunity", [opportunity(7)])
    contacts = [SubRequest.create("Contact", {"LastName": f"Person {i}", "Email": f"p{i}@example.test"}, ref=f"c{i}")
                for i in range(15)]
    roles = [SubRequest.create("OpportunityContactRole", {"OpportunityId": opp.id, "ContactId": f"@{{c{i}.id}}",
                                                          "Role": "Decision Maker"}, ref=f"r{i}")
             for i in range(15)]
    before = used(sf_sim)
    answers = client.composite(contacts + roles)
    assert used(sf_sim) == before + 2  # 30 subrequests: 25 + 5
    assert all(a.success for a in answers), [a.body for a in answers if not a.success]
    role_contacts = {r["ContactId"] for r in sf_sim.query(
        f"SELECT ContactId FROM OpportunityContactRole WHERE OpportunityId = '{opp.id}'")}
    assert role_contacts == {a.id for a in answers[:15]}
    failed = client.composite([SubRequest.update("Contact", answers[0].id, {"LastName": None}, ref="bad")])
    assert not failed[0].success and isinstance(failed[0].error("composite"), InvalidInput)


def test_composite_sends_at_most_5_queries_or_collections_a_call(sf_sim: SalesforceSim,
                                                                 client: SalesforceClient) -> None:
    """Salesforce: of a composite's 25 subrequests, at most 5 may be queries or sObject Collections."""
    import json

    raw = requests.post(f"{sf_sim.url}/services/data/v{client.api_version}/composite", timeout=10,
                        headers={"Authorization": f"Bearer {client._connection().session_id}",
                                 "Content-Type": "application/json"},
                        data=json.dumps({"compositeRequest": [
                            {"method": "GET", "referenceId": f"q{i}",
                             "url": f"/services/data/v{client.api_version}/query?q=SELECT+Id+FROM+Account"}
                            for i in range(6)]}))
    assert raw.status_code == 400 and raw.json()[0]["errorCode"] == "LIMIT_EXCEEDED"  # the simulator enforces it

    queries = [SubRequest.query(f"SELECT Id FROM Account WHERE Name = 'n{i}'", ref=f"q{i}") for i in range(7)]
    creates = [SubRequest.create("Contact", {"LastName": f"Person {i}"}, ref=f"c{i}") for i in range(3)]
    before = used(sf_sim)
    answers = client.composite(queries + creates)
    assert all(a.success for a in answers), [a.body for a in answers if not a.success]
    assert used(sf_sim) == before + 2  # 5 queries, then 2 queries and the 3 creates


def test_composite_upserts_queries_and_deletes_related_rows(sf_sim: SalesforceSim, client: SalesforceClient) -> None:
    [opp] = client.upsert("Opportunity", [opportunity(8)])
    row = {"Name": "Migrate", "Opportunity__c": opp.id, "Solution_Id__c": "sol-1"}
    first = client.composite([SubRequest.upsert("Microsoft_Solution__c", "Solution_Key__c", "ref-0008:sol-1", row,
                                                ref="row")])
    renamed = {"Name": "Migrate+"}  # the master-detail parent is create-only: an update leaves it out
    again = client.composite([
        SubRequest.upsert("Microsoft_Solution__c", "Solution_Key__c", "ref-0008:sol-1", renamed, ref="row"),
        SubRequest.query(f"SELECT Id, Solution_Id__c FROM Microsoft_Solution__c WHERE Opportunity__c = '{opp.id}'",
                         ref="rows"),
    ])
    assert first[0].status == 201 and again[0].status == 200 and again[0].id == first[0].id  # no second row
    assert [r["Solution_Id__c"] for r in again[1].body["records"]] == ["sol-1"]
    gone = client.composite([SubRequest.delete("Microsoft_Solution__c", first[0].id, ref="gone")])
    assert gone[0].success and sf_sim.org.count("Microsoft_Solution__c") == 0
    assert client.get("Opportunity", opp.id, ["Name", "StageName"]) == {"Name": "Deal 8", "StageName": "Prospecting"}


# Retries ---------------------------------------------------------------------------------------------

def test_locked_records_are_sent_again_and_only_they(sf_sim: SalesforceSim, client: SalesforceClient) -> None:
    client.describe("Opportunity")
    sandbox(sf_sim, "lock-rows", {"count": 2})
    before = used(sf_sim)
    results = client.upsert("Opportunity", [opportunity(i) for i in range(5)])
    assert all(r.success for r in results)
    assert used(sf_sim) == before + 2  # the batch, then the 2 locked records
    assert sf_sim.org.count("Opportunity") == 5


def test_a_lock_that_outlasts_the_retries_is_reported_per_record(sf_sim: SalesforceSim,
                                                                 client: SalesforceClient) -> None:
    client.describe("Opportunity")
    sandbox(sf_sim, "lock-rows", {"count": 100})
    before = used(sf_sim)
    [result] = client.upsert("Opportunity", [opportunity(1)])
    assert result.locked and isinstance(result.error("upsert"), Unavailable)
    assert used(sf_sim) == before + 1 + FAST.attempts


def test_composite_resends_locked_subrequests_and_those_that_depended_on_them(
        sf_sim: SalesforceSim, client: SalesforceClient) -> None:
    [opp] = client.upsert("Opportunity", [opportunity(3)])
    sandbox(sf_sim, "lock-rows", {"count": 1})
    answers = client.composite([
        SubRequest.create("Contact", {"LastName": "Weber"}, ref="contact"),
        SubRequest.create("OpportunityContactRole", {"OpportunityId": opp.id, "ContactId": "@{contact.id}"},
                          ref="role"),
    ])
    assert [a.success for a in answers] == [True, True]
    assert sf_sim.org.count("Contact") == 1 and sf_sim.org.count("OpportunityContactRole") == 1


def test_a_whole_call_refused_for_a_lock_is_retried(sf_sim: SalesforceSim, client: SalesforceClient) -> None:
    client.describe("Opportunity")
    sandbox(sf_sim, "faults", {"kind": "status", "status": 400, "count": 1, "path": "/services/data/v64.0/composite",
                               "body": [{"errorCode": "UNABLE_TO_LOCK_ROW", "message": "unable to obtain access"}]})
    results = client.upsert("Opportunity", [opportunity(1)])
    assert results[0].success and sandbox(sf_sim, "faults", method="GET")["injected"] == 1


def test_5xx_is_retried_for_idempotent_calls(sf_sim: SalesforceSim, client: SalesforceClient) -> None:
    client.describe("Opportunity")
    sandbox(sf_sim, "faults", {"kind": "status", "status": 503, "count": 2, "method": "PATCH",
                               "path": "/services/data/v64.0/composite/sobjects"})
    assert client.upsert("Opportunity", [opportunity(1)])[0].success
    sandbox(sf_sim, "faults", {"kind": "status", "status": 500, "count": 2, "method": "GET",
                               "path": "/services/data/v64.0/query"})
    assert len(list(client.query("SELECT Id FROM Opportunity"))) == 1
    assert sandbox(sf_sim, "faults", method="GET") == {"pending": [], "injected": 4}


def test_5xx_that_persists_becomes_unavailable(sf_sim: SalesforceSim, client: SalesforceClient) -> None:
    client.describe("Opportunity")
    sandbox(sf_sim, "faults", {"kind": "status", "status": 502, "count": 10, "path": "/services/data/v64.0/query"})
    with pytest.raises(Unavailable, match="query"):
        list(client.query("SELECT Id FROM Opportunity"))
    assert sandbox(sf_sim, "faults", method="GET")["injected"] == 1 + FAST.attempts


def test_a_create_is_not_retried_on_500_but_is_on_503(sf_sim: SalesforceSim, client: SalesforceClient) -> None:
    client.describe("Account")
    sandbox(sf_sim, "faults", {"kind": "status", "status": 500, "count": 1, "method": "POST",
                               "path": "/services/data/v64.0/composite/sobjects"})
    with pytest.raises(Unavailable):
        client.create("Account", [{"Name": "Maybe created"}])
    sandbox(sf_sim, "faults", {"kind": "status", "status": 503, "count": 1, "method": "POST",
                               "path": "/services/data/v64.0/composite/sobjects"})
    assert client.create("Account", [{"Name": "Created once"}])[0].success
    assert [r["Name"] for r in sf_sim.query("SELECT Name FROM Account")] == ["Created once"]


def test_request_limit_exceeded_is_not_retried(sf_sim: SalesforceSim, client: SalesforceClient,
                                               responses: list[int]) -> None:
    client.describe("Opportunity")
    sandbox(sf_sim, "limits", {"limit": 1000, "used": 1000})
    responses.clear()
    with client.urgent(), pytest.raises(LimitExceeded, match="REQUEST_LIMIT_EXCEEDED"):
        list(client.query("SELECT Id FROM Opportunity"))
    assert responses == [403]


def test_request_limit_exceeded_with_calls_left_is_a_short_wait_not_a_spent_budget(
        sf_sim: SalesforceSim, client: SalesforceClient, responses: list[int]) -> None:
    """REQUEST_LIMIT_EXCEEDED also answers a 26th concurrent long request: the limit header tells them apart."""
    from shared.errors import Throttled
    from shared.salesforce.errors import CONCURRENCY_RETRY
    from shared.sync.failures import Retry, decide

    client.describe("Opportunity")
    sandbox(sf_sim, "limits", {"limit": 1000, "used": 10, "concurrent_refusals": 1})
    responses.clear()
    with pytest.raises(Throttled, match="too many long requests at once") as refused:
        list(client.query("SELECT Id FROM Opportunity"))
    assert responses == [403] and refused.value.retry_after == CONCURRENCY_RETRY
    assert not isinstance(refused.value, LimitExceeded) and client.budget.state() == "ok"
    decision = decide(refused.value, 1, 5)
    assert isinstance(decision, Retry) and decision.delay_seconds < 60  # not the half hour of a spent budget
    assert len(list(client.query("SELECT Id FROM Opportunity"))) == 0  # the next call goes through


# Budget ----------------------------------------------------------------------------------------------

def test_budget_share_stops_background_work_but_not_urgent_syncs(
        sf_sim: SalesforceSim, connect: Callable[..., SalesforceClient], azurite: str, table_prefix: str) -> None:
    store = Store.from_connection_string(azurite, prefix=table_prefix)
    client = connect(sf_sim, store=store, COSELL_SF_BUDGET_SHARE="0.8")
    sandbox(sf_sim, "limits", {"limit": 100, "used": 78})
    list(client.query("SELECT Id FROM User"))  # 79/100: under the share
    list(client.query("SELECT Id FROM User"))  # 80/100: the share is reached
    assert client.budget.usage.used == 80
    with pytest.raises(LimitExceeded, match="80 of 100 daily calls used"):
        list(client.query("SELECT Id FROM User"))
    assert used(sf_sim) == 80  # refused before any call
    doc = store.status.get(BUDGET_DOC)
    assert doc is not None and doc.data["used"] == 80 and doc.data["limit"] == 100 and doc.data["state"] == "reserved"
    with client.urgent():
        assert len(list(client.query("SELECT Id FROM User"))) == 2
    assert used(sf_sim) == 81
    sandbox(sf_sim, "limits", {"used": 99})
    with client.urgent():
        list(client.query("SELECT Id FROM User"))  # 100/100
        with pytest.raises(LimitExceeded, match="limit is used up"):
            list(client.query("SELECT Id FROM User"))
    assert used(sf_sim) == 100
    assert store.status.get(BUDGET_DOC).data["state"] == "exhausted"
