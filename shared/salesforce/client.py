"""`SalesforceClient`: the connector's one way to talk to Salesforce.

It logs in itself (`auth`), hands the instance URL and token to simple-salesforce, and wraps every call in
one place (`_call`) that checks the API budget first, logs in again once when the session expired, retries
row locks, and maps every failure through `errors.error_for`. Queries page lazily; writes go through
sObject Collections (200 records a call, per-record results) and composite (25 subrequests a call).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession

from shared.errors import NotFound, Unavailable
from shared.salesforce.auth import Credentials, fetch_token
from shared.salesforce.budget import ApiBudget
from shared.salesforce.describe import OrgSchema, SObjectDescribe
from shared.salesforce.errors import LOCK_ERROR, error_for, first_error
from shared.salesforce.results import RecordResult, SubRequest, SubResponse
from shared.salesforce.retry import RetryPolicy

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")

COLLECTION_SIZE = 200
"""Records per sObject Collections call (Salesforce's maximum)."""
COMPOSITE_SIZE = 25
COMPOSITE_HEAVY = 5
"""Of a composite's 25 subrequests, at most 5 may be queries or sObject Collections (Salesforce's limit)."""
"""Subrequests per composite call (Salesforce's maximum)."""
REFERRAL_ID_FIELD = "Referral_Identifier__c"

_URGENT: ContextVar[bool] = ContextVar("salesforce_urgent", default=False)
_REFERENCE = re.compile(r"@\{([A-Za-z][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_]+|\[\d+\])*)\}")


class SalesforceClient:
    """Salesforce REST through simple-salesforce, with the connector's login, budget, retries and errors.

    Thread-safe: the Functions worker may run several invocations on one cached client.

    Args:
        login_url: `SALESFORCE_LOGIN_URL` (login.salesforce.com, test.salesforce.com, a My Domain URL, or
            the simulator).
        credentials: how to log in.
        api_version: e.g. "64.0".
        session: the HTTP session (default: one with the retry policy's transport retries and timeout).
        budget: the API budget to observe and enforce (default: no share reserved, nothing reported).
        retry: the retry policy.
        sleep: how to wait between lock retries (tests pass a no-op).
    """

    def __init__(self, *, login_url: str, credentials: Credentials, api_version: str,
                 session: requests.Session | None = None, budget: ApiBudget | None = None,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.login_url = login_url.rstrip("/")
        self.credentials = credentials
        self.api_version = api_version
        self.retry = retry or RetryPolicy()
        self.session = session or self.retry.session()
        self.budget = budget or ApiBudget(1.0)
        self.session.hooks["response"].append(self._observe)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._sf: Salesforce | None = None
        self._describes: dict[str, SObjectDescribe] = {}

    @classmethod
    def from_settings(cls, settings: Settings, *, store: Store | None = None, session: requests.Session | None = None,
                      retry: RetryPolicy | None = None) -> SalesforceClient:
        """The client for the configured org; with a store, the API budget is reported to `store.status`."""
        return cls(login_url=settings.salesforce_login_url, credentials=Credentials.from_settings(settings),
                   api_version=settings.salesforce_api_version, session=session, retry=retry,
                   budget=ApiBudget(settings.cosell_sf_budget_share, store.status if store is not None else None))

    # The session --------------------------------------------------------------------------------------

    @contextmanager
    def urgent(self) -> Iterator[None]:
        """Calls inside are urgent (a sync a person waits for): allowed above the budget share, up to the limit."""
        token = _URGENT.set(True)
        try:
            yield
        finally:
            _URGENT.reset(token)

    def _observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.budget.observe(response.headers.get("Sforce-Limit-Info"))

    def _connection(self, stale: Salesforce | None = None) -> Salesforce:
        """The logged-in simple-salesforce client; logs in (again) when there is none or it is `stale`."""
        with self._lock:
            if self._sf is None or self._sf is stale:
                token = fetch_token(self.session, self.login_url, self.credentials)
                self._sf = Salesforce(instance_url=token.instance_url, session_id=token.access_token,
                                      version=self.api_version, session=self.session)
                log.info("Salesforce: logged in (%s grant) to %s", self.credentials.grant.value, token.instance_url)
            return self._sf

    def _call(self, operation: Callable[[Salesforce], T], *, what: str) -> T:
        """Run one API call: budget check, one re-login on an expired session, lock retries, error mapping."""
        delays = self.retry.delays()
        renewed = False
        while True:
            self.budget.check(urgent=_URGENT.get())
            sf = self._connection()
            try:
                return operation(sf)
            except SalesforceExpiredSession as exc:
                if renewed:
                    raise error_for(401, exc.content, what=what) from None
                renewed = True
                log.info("Salesforce %s: session expired, logging in again", what)
                self._connection(stale=sf)
            except SalesforceError as exc:
                delay = next(delays, None) if first_error(exc.content)[0] == LOCK_ERROR else None
                if delay is None:
                    raise error_for(exc.status, exc.content, what=what, usage=self.budget.fresh_usage()) from None
                log.info("Salesforce %s: row locked, retrying in %.1f s", what, delay)
                self._sleep(delay)
            except requests.RequestException as exc:
                raise Unavailable(f"Salesforce {what}: {self.login_url} did not answer ({type(exc).__name__})") from None

    # Reading ------------------------------------------------------------------------------------------

    def query(self, soql: str, *, include_deleted: bool = False) -> Iterator[dict[str, Any]]:
        """The records of a SOQL query, lazily, following `nextRecordsUrl` page by page (without `attributes`)."""
        page = self._call(lambda sf: sf.query(soql, include_deleted=include_deleted), what="query")
        while True:
            for record in page.get("records", []):
                yield without_attributes(record)
            next_url = page.get("nextRecordsUrl")
            if page.get("done", True) or not next_url:
                return
            page = self._call(lambda sf: sf.query_more(next_url, identifier_is_url=True), what="query")

    def get(self, sobject: str, record_id: str, fields: Sequence[str] | None = None) -> dict[str, Any]:
        """One record (only `fields` when given)."""
        params = {"fields": ",".join(fields)} if fields else None
        record = self._call(lambda sf: sf.restful(f"sobjects/{sobject}/{record_id}", params=params),
                            what=f"get {sobject}")
        return without_attributes(record or {})

    def limits(self) -> dict[str, Any]:
        """The org's limits (`GET limits`): `DailyApiRequests` holds `Max` and `Remaining`."""
        return dict(self._call(lambda sf: sf.restful("limits"), what="limits") or {})

    def describe(self, sobject: str) -> SObjectDescribe:
        """An object's describe, read once per process (the org's schema changes only with a deployment)."""
        cached = self._describes.get(sobject)
        if cached is None:
            raw = self._call(lambda sf: sf.restful(f"sobjects/{sobject}/describe"), what=f"describe {sobject}")
            cached = self._describes[sobject] = SObjectDescribe.model_validate(raw)
        return cached

    def org_schema(self, sobjects: Sequence[str]) -> OrgSchema:
        """The describes of these objects; an object the org lacks is left out (the mapping check names it)."""
        found = []
        for name in sobjects:
            try:
                found.append(self.describe(name))
            except NotFound:
                continue
        return OrgSchema.from_describes(found)

    # Writing ------------------------------------------------------------------------------------------

    def create(self, sobject: str, records: Sequence[Mapping[str, Any]]) -> list[RecordResult]:
        """Create records, 200 a call; one result per record, in order."""
        return self._collection("POST", "composite/sobjects", sobject, records, what=f"create {sobject}")

    def upsert(self, sobject: str, records: Sequence[Mapping[str, Any]], *,
               external_id: str = REFERRAL_ID_FIELD) -> list[RecordResult]:
        """Create-or-update by an external id field, 200 a call: repeating it never makes a duplicate."""
        return self._collection("PATCH", f"composite/sobjects/{sobject}/{external_id}", sobject, records,
                                what=f"upsert {sobject}")

    def update(self, sobject: str, records: Sequence[Mapping[str, Any]]) -> list[RecordResult]:
        """Update records by Id, 200 a call. A record with nothing but its Id is not sent (Salesforce would
        still bump SystemModstamp and wake every other integration): its result says `skipped`."""
        results: list[RecordResult | None] = [None] * len(records)
        changed = [i for i, r in enumerate(records) if set(r) - {"Id", "attributes"}]
        for i, record in enumerate(records):
            if i not in changed:
                results[i] = RecordResult(id=record.get("Id"), success=True, skipped=True)
        sent = self._collection("PATCH", "composite/sobjects", sobject, [records[i] for i in changed],
                                what=f"update {sobject}")
        for i, result in zip(changed, sent, strict=True):
            results[i] = result
        return [r for r in results if r is not None]

    def delete(self, record_ids: Sequence[str]) -> list[RecordResult]:
        """Delete records by Id, 200 a call."""
        results: list[RecordResult] = []
        for start in range(0, len(record_ids), COLLECTION_SIZE):
            params = {"ids": ",".join(record_ids[start:start + COLLECTION_SIZE]), "allOrNone": "false"}
            answer = self._call(lambda sf: sf.restful("composite/sobjects", params=params, method="DELETE"),
                                what="delete")
            results += [RecordResult.model_validate(raw) for raw in answer or []]
        return results

    def _collection(self, method: str, path: str, sobject: str, records: Sequence[Mapping[str, Any]], *,
                    what: str) -> list[RecordResult]:
        results: list[RecordResult] = []
        for start in range(0, len(records), COLLECTION_SIZE):
            results += self._collection_call(method, path, sobject, records[start:start + COLLECTION_SIZE], what)
        return results

    def _collection_call(self, method: str, path: str, sobject: str, chunk: Sequence[Mapping[str, Any]],
                         what: str) -> list[RecordResult]:
        """One Collections call (allOrNone false), then the locked records again until none is left."""
        results: list[RecordResult] = [RecordResult() for _ in chunk]
        pending = list(range(len(chunk)))
        delays = self.retry.delays()
        while pending:
            body = {"allOrNone": False,
                    "records": [{**chunk[i], "attributes": {"type": sobject}} for i in pending]}
            answer = self._call(lambda sf: sf.restful(path, method=method, json=body), what=what)
            for index, raw in zip(pending, answer or [], strict=True):
                results[index] = RecordResult.model_validate(raw)
            pending = [i for i in pending if results[i].locked]
            delay = next(delays, None) if pending else None
            if delay is None:
                break
            log.info("Salesforce %s: %d record(s) locked, retrying in %.1f s", what, len(pending), delay)
            self._sleep(delay)
        return results

    def composite(self, subrequests: Sequence[SubRequest], *, all_or_none: bool = False) -> list[SubResponse]:
        """Run subrequests through composite, 25 a call of which at most 5 queries or Collections
        (`composite_calls`), one answer per subrequest, in order.

        `@{ref.id}` references work across calls (an earlier call's results are filled in). `all_or_none`
        holds within each call, not across calls. Subrequests that failed on a row lock (and those
        that did not run because of them) are sent again.
        """
        outputs: dict[str, Any] = {}
        answers: dict[str, SubResponse] = {}
        for group in composite_calls(subrequests):
            pending = list(group)
            delays = self.retry.delays()
            while pending:
                body = {"allOrNone": all_or_none,
                        "compositeRequest": [self._subrequest_json(s, outputs) for s in pending]}
                answer = self._call(lambda sf: sf.restful("composite", method="POST", json=body), what="composite")
                for raw in (answer or {}).get("compositeResponse", []):
                    response = SubResponse.model_validate(raw)
                    answers[response.reference_id] = response
                    if response.success:
                        outputs[response.reference_id] = response.body
                locked = any(answers[s.reference_id].error_code == LOCK_ERROR for s in pending)
                pending = [s for s in pending if answers[s.reference_id].retryable] if locked else []
                delay = next(delays, None) if pending else None
                if delay is None:
                    break
                log.info("Salesforce composite: %d subrequest(s) locked, retrying in %.1f s", len(pending), delay)
                self._sleep(delay)
        return [answers[s.reference_id] for s in subrequests]

    def _subrequest_json(self, sub: SubRequest, outputs: Mapping[str, Any]) -> dict[str, Any]:
        item: dict[str, Any] = {"method": sub.method, "referenceId": sub.reference_id,
                                "url": _resolve(f"/services/data/v{self.api_version}/{sub.path}", outputs)}
        if sub.body is not None:
            item["body"] = _resolve(sub.body, outputs)
        return item


def composite_calls(subrequests: Sequence[SubRequest]) -> list[list[SubRequest]]:
    """Subrequests cut into composite calls, in order: at most 25 a call, at most 5 of them heavy."""
    calls: list[list[SubRequest]] = []
    heavy = 0
    for sub in subrequests:
        if not calls or len(calls[-1]) == COMPOSITE_SIZE or (sub.heavy and heavy == COMPOSITE_HEAVY):
            calls.append([])
            heavy = 0
        calls[-1].append(sub)
        heavy += sub.heavy
    return calls


def without_attributes(record: Any) -> Any:
    """A record without Salesforce's `attributes`, subquery results included (query rows, composite answers)."""
    if isinstance(record, dict):
        return {k: without_attributes(v) for k, v in record.items() if k != "attributes"}
    if isinstance(record, list):
        return [without_attributes(v) for v in record]
    return record


def _resolve(value: Any, outputs: Mapping[str, Any]) -> Any:
    """Fill in `@{ref.path}` references to subrequests answered in an earlier call; leave the others."""
    if isinstance(value, dict):
        return {k: _resolve(v, outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, outputs) for v in value]
    if not isinstance(value, str):
        return value

    def fill(match: re.Match[str]) -> str:
        if match.group(1) not in outputs:
            return match.group(0)
        current: Any = outputs[match.group(1)]
        for name, index in re.findall(r"\.([A-Za-z0-9_]+)|\[(\d+)\]", match.group(2)):
            current = current[int(index)] if index else current[name]
        return str(current)

    return _REFERENCE.sub(fill, value)


__all__ = ["COLLECTION_SIZE", "COMPOSITE_HEAVY", "COMPOSITE_SIZE", "composite_calls", "REFERRAL_ID_FIELD", "SalesforceClient", "without_attributes"]
