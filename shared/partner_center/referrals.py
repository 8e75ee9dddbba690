"""`PartnerCenterClient`: the referrals (engagements) API, in the handbook's terms.

Why the methods look like this: the sync layer needs exactly four things from Partner Center (list what
changed, read one with its ETag, create one, patch fields with If-Match) and must never page eagerly or
retry a create blindly. Retries, throttling and errors are the transport's; this module only knows URLs,
headers and models.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import requests
from pydantic import BaseModel, ConfigDict, ValidationError

from shared.errors import AuthExpired, InvalidInput, UnreadableRecord
from shared.models.apitypes import format_api_datetime
from shared.models.referral import Direction, Referral, ReferralPage, unreadable_reason
from shared.partner_center.token import RefreshTokenCredential, SecretKeeper
from shared.partner_center.transport import ApiTransport, RetryPolicy, TimeoutSession

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.store import Store


class PatchOperation(BaseModel):
    """One JSON Patch operation; Partner Center takes `replace` and `add` only."""

    model_config = ConfigDict(frozen=True)

    op: Literal["replace", "add"]
    path: str
    value: Any

    @classmethod
    def replace(cls, path: str, value: Any) -> PatchOperation:
        return cls(op="replace", path=path, value=value)

    @classmethod
    def add(cls, path: str, value: Any) -> PatchOperation:
        return cls(op="add", path=path, value=value)


def read_referral(body: Any, *, what: str) -> Referral:
    """A referral from a response body.

    Raises:
        UnreadableRecord: the body does not fit the model (the reason names fields, not values).
    """
    try:
        return Referral.model_validate(body)
    except ValidationError as exc:
        referral_id = body.get("id") if isinstance(body, dict) and isinstance(body.get("id"), str) else None
        raise UnreadableRecord(f"Partner Center sent {what}{' ' + referral_id if referral_id else ''} in a shape "
                               f"the connector cannot read ({unreadable_reason(exc)})") from None


PAGE_SIZE = 100
"""`$top` of every listing: Partner Center's reference caps a page at 100 referrals (follow nextLink)."""


def odata_quote(value: str) -> str:
    """An OData string literal: single quotes, doubled inside."""
    return "'" + value.replace("'", "''") + "'"


def odata_filter(*, updated_since: dt.datetime | None = None, created_since: dt.datetime | None = None,
                 status: str | None = None, substatus: str | None = None, direction: str | None = None,
                 engagement_id: str | None = None) -> str | None:
    """A `$filter` on the fields the API filters by, the given conditions joined with `and`."""
    clauses = []
    if updated_since is not None:
        clauses.append(f"updatedDateTime ge {format_api_datetime(updated_since)}")
    if created_since is not None:
        clauses.append(f"createdDateTime ge {format_api_datetime(created_since)}")
    for field, value in (("status", status), ("substatus", substatus), ("direction", direction),
                         ("engagementId", engagement_id)):
        if value is not None:
            clauses.append(f"{field} eq {odata_quote(str(getattr(value, 'value', value)))}")
    return " and ".join(clauses) or None


class PartnerCenterClient:
    """The referrals API.

    Args:
        transport: authenticated, retried HTTP to `PARTNER_CENTER_API_URL`.
        credential: the App+User credential, told when the API refuses its token (token health).
    """

    def __init__(self, transport: ApiTransport, *, credential: RefreshTokenCredential | None = None) -> None:
        self.transport = transport
        self.credential = credential

    @classmethod
    def from_settings(cls, settings: Settings, *, store: Store, session: requests.Session | None = None,
                      retry: RetryPolicy | None = None, secrets: SecretKeeper | None = None) -> PartnerCenterClient:
        """Build the client: the newest refresh token kept in `secrets` (the Key Vault in Azure, else the
        store's secrets table), token health in `store`, rate limit from settings."""
        session = session or TimeoutSession()
        credential = RefreshTokenCredential.from_settings(settings, session, secrets=secrets or store.secrets,
                                                          status=store.status)
        transport = ApiTransport(settings.partner_center_api_url, credential, session=session,
                                 rate_limit=settings.cosell_pc_rate_limit, retry=retry, api="Partner Center referrals")
        return cls(transport, credential=credential)

    @property
    def last_request_id(self) -> str | None:
        """The request-id of this thread's last answer (for the sync log)."""
        return self.transport.last_request_id

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.transport.request(method, path, **kwargs)
        except AuthExpired as exc:
            if self.credential is not None:
                self.credential.record_api_refusal(exc)
            raise

    def iter_pages(self, *, filter: str | None = None, orderby: str | None = None,
                   top: int | None = None) -> Iterator[ReferralPage]:
        """Pages of `GET /referrals`, following `@odata.nextLink` until it is absent.

        Referrals the model cannot read are in each page's `unreadable`, not in `value`.

        Args:
            filter: an OData `$filter` (see `odata_filter`).
            orderby: e.g. `updatedDateTime asc`.
            top: page size (at most `PAGE_SIZE`).
        """
        query = [(name, value) for name, value in (("$filter", filter), ("$orderby", orderby),
                                                   ("$top", None if top is None else str(top))) if value]
        link: str | None = "referrals" + ("?" + "&".join(f"{name}={quote(value, safe=chr(39) + ':,()')}"
                                                          for name, value in query) if query else "")
        seen: set[str] = set()
        while link:
            if link in seen:
                raise InvalidInput(f"Partner Center returned the same nextLink twice ({link[:120]}): paging stopped")
            seen.add(link)
            page = ReferralPage.model_validate(self._request("GET", link).json())
            yield page
            link = page.next_link

    def list_referrals(self, *, filter: str | None = None, orderby: str | None = None,
                       top: int | None = None) -> Iterator[Referral]:
        """Every readable referral matching `filter`, page after page, lazily (see `iter_pages`)."""
        for page in self.iter_pages(filter=filter, orderby=orderby, top=top):
            yield from page.value

    def get_referral(self, referral_id: str) -> Referral:
        """One referral with its ETag (from the body, or the `ETag` header when the body lacks it).

        Raises:
            NotFound: no such referral.
        """
        response = self._request("GET", f"referrals/{quote(referral_id, safe='')}")
        referral = read_referral(response.json(), what="referral")
        if referral.e_tag is None and response.headers.get("ETag"):
            referral.e_tag = response.headers["ETag"]
        return referral

    def create_referral(self, referral: Referral) -> Referral:
        """Create a referral (`POST /referrals`); never retried after a 5xx or a lost connection.

        The caller owns idempotency: write a create intent first and put the Salesforce Opportunity Id in
        `externalReferenceId`, then resolve an unfinished intent with `find_outgoing_by_external_reference`.
        """
        body = referral.to_api()
        for read_only in ("id", "eTag", "createdDateTime", "updatedDateTime", "expirationDateTime"):
            body.pop(read_only, None)
        response = self._request("POST", "referrals", json=body, idempotent=False)
        return read_referral(response.json(), what="the created referral")

    def update_referral(self, referral_id: str, operations: Iterable[PatchOperation], *,
                        etag: str | None) -> Referral:
        """Apply JSON Patch operations; with `etag`, only if the referral is unchanged since it was read.

        Returns:
            The referral as it is after the change (`Prefer: return=representation`).

        Raises:
            Conflict: the ETag is stale (412): re-read, re-merge, try again.
            InvalidInput: the service refused the change (e.g. a transition the state machine forbids).
        """
        ops = [op.model_dump(mode="json") for op in operations]
        if not ops:
            raise InvalidInput("a referral update needs at least one operation")
        # application/json, as in every Microsoft example and Microsoft's own Power Platform connector.
        headers = {"Content-Type": "application/json", "Prefer": "return=representation"}
        if etag:
            headers["If-Match"] = etag
        path = f"referrals/{quote(referral_id, safe='')}"
        response = self._request("PATCH", path, json=ops, headers=headers)
        if response.status_code == 204 or not response.content:
            return self.get_referral(referral_id)
        referral = read_referral(response.json(), what="the updated referral")
        if referral.e_tag is None and response.headers.get("ETag"):
            referral.e_tag = response.headers["ETag"]
        return referral

    def find_outgoing_by_external_reference(self, external_reference_id: str, *,
                                            created_since: dt.datetime) -> Referral | None:
        """The outgoing referral created since `created_since` that carries this external reference id.

        Why: the API cannot filter on `externalReferenceId`, yet a create intent left by a crash must be
        resolved before any second POST. Listing recent outgoing referrals is the proof either way.

        Raises:
            UnreadableRecord: the referral is there but unreadable: not "absent", so no second POST.
        """
        for page in self.iter_pages(filter=odata_filter(created_since=created_since, direction=Direction.OUTGOING),
                                    orderby="createdDateTime desc", top=PAGE_SIZE):
            found = next((r for r in page.value if r.external_reference_id == external_reference_id), None)
            if found is not None:
                return found
            for bad in page.unreadable:
                if bad.external_reference_id == external_reference_id:
                    raise UnreadableRecord(f"Partner Center holds referral {bad.id} for this opportunity in a "
                                           f"shape the connector cannot read ({bad.reason})")
        return None


__all__ = ["PAGE_SIZE", "PartnerCenterClient", "PatchOperation", "odata_filter", "odata_quote", "read_referral"]
