"""The Partner Center referral, as pydantic models that survive a read-modify-write untouched.

Why so careful: the connector PATCHes referrals it did not create, owned by Microsoft's schema. Three rules
keep it from damaging them:

1. Every level keeps unknown fields (`extra="allow"`): a field Microsoft adds tomorrow comes back out of
   `to_api()` as it came in.
2. `to_api()` writes only the fields that were read or set (`exclude_unset`), so a field that was absent
   stays absent instead of turning into `null`, and timestamps keep their exact text (`ApiDateTime`).
3. Enums are **open**: a known value becomes the `str` enum member, an unknown one stays a plain string,
   kept verbatim. Microsoft adds enum values without notice; refusing a whole referral (and stopping its
   sync) over one new substatus would be worse than passing it through. Comparisons with members
   (`referral.status == ReferralStatus.ACTIVE`) simply never match an unknown value, so the sync layer
   treats it as "not a state I act on".

Field names are snake_case in Python and camelCase on the wire (aliases); both are accepted on input.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from shared.models.apitypes import ApiDateTime


class ReferralStatus(StrEnum):
    NONE = "None"
    NEW = "New"
    ACTIVE = "Active"
    CLOSED = "Closed"


class ReferralSubstatus(StrEnum):
    NONE = "None"
    PENDING = "Pending"
    RECEIVED = "Received"
    ACCEPTED = "Accepted"
    WON = "Won"
    LOST = "Lost"
    DECLINED = "Declined"
    EXPIRED = "Expired"


class ReferralType(StrEnum):
    INDEPENDENT = "Independent"
    SHARED = "Shared"
    """Co-sell with Microsoft: the engagement also holds a referral targeted at Microsoft."""


class Qualification(StrEnum):
    NONE = "None"
    DIRECT = "Direct"
    MARKETING_QUALIFIED = "MarketingQualified"
    SALES_QUALIFIED = "SalesQualified"


class Direction(StrEnum):
    INCOMING = "Incoming"
    OUTGOING = "Outgoing"


class AssistanceRequestCode(StrEnum):
    """What the partner asks Microsoft for (Salesforce's "How can Microsoft help" picklist)."""

    UNKNOWN = "Unknown"
    GENERAL_OR_OTHER = "GeneralOrOther"
    CUSTOMER_TECHNICAL_ARCHITECTURE = "CustomerTechnicalArchitecture"
    PROOF_OF_CONCEPT_OR_DEMO = "ProofOfConceptOrDemo"
    QUOTES_OR_LICENSING = "QuotesOrLicensing"
    POST_SALES_CUSTOMER_SUCCESS = "PostSalesCustomerSuccess"
    WORKLOAD_SPECIFIC_VALUE_PROPOSITION = "WorkloadSpecificValueProposition"


# Open enums: the member when known, the verbatim string otherwise (see the module docstring).
_LEFT_TO_RIGHT = Field(union_mode="left_to_right")
OpenStatus = Annotated[ReferralStatus | str, _LEFT_TO_RIGHT]
OpenSubstatus = Annotated[ReferralSubstatus | str, _LEFT_TO_RIGHT]
OpenType = Annotated[ReferralType | str, _LEFT_TO_RIGHT]
OpenQualification = Annotated[Qualification | str, _LEFT_TO_RIGHT]
OpenDirection = Annotated[Direction | str, _LEFT_TO_RIGHT]
OpenAssistanceRequestCode = Annotated[AssistanceRequestCode | str, _LEFT_TO_RIGHT]

Number = int | float
"""JSON numbers stay as they came: 48000 is not rewritten as 48000.0."""

TERMINAL_SUBSTATUSES = frozenset(
    {ReferralSubstatus.WON, ReferralSubstatus.LOST, ReferralSubstatus.DECLINED, ReferralSubstatus.EXPIRED}
)


class ApiModel(BaseModel):
    """Base of every Partner Center payload model: camelCase aliases, unknown fields kept."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        validate_assignment=True,
    )

    def to_api(self) -> dict[str, Any]:
        """The JSON body Partner Center expects: camelCase, only fields that were read or set, extras kept."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class ContactPreference(ApiModel):
    """How a person wants to be reached: `{locale, disableNotifications}` in the reference's schema; the
    older `{phoneEnabled, emailEnabled}` of some examples is read too."""

    phone_enabled: bool | None = None
    email_enabled: bool | None = None
    locale: str | None = None
    disable_notifications: bool | None = None


class Member(ApiModel):
    """A person: a customer contact or a partner seller."""

    first_name: str | None = None
    last_name: str | None = None
    phone_number: str | None = None
    email: str | None = None
    contact_preference: ContactPreference | None = None


class Address(ApiModel):
    address_line1: str | None = None
    address_line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None
    """ISO 3166 alpha-2."""
    region: str | None = None


class CustomerId(ApiModel):
    """An identifier of the customer organisation (`profileType` Duns or External)."""

    profile_type: str | None = None
    id: str | None = None


class CustomerProfile(ApiModel):
    name: str | None = None
    address: Address | None = None
    size: str | None = None
    team: list[Member] | None = None
    ids: list[CustomerId] | dict[str, Any] | None = None
    """A list in the reference's schema, but `{}` in some of its examples: both are kept as they came."""


class Consent(ApiModel):
    """Consent flags. The third flag's name is spelt two ways across the reference; both are read, and the
    spelling of the reference's request example (`consentToToShareInfoWithOthers`) is written."""

    consent_to_share_referral_with_microsoft_sellers: bool | None = None
    consent_to_contact: bool | None = None
    consent_to_share_info_with_others: bool | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "consentToToShareInfoWithOthers",
            "consentToShareInfoWithOthers",
            "consent_to_share_info_with_others",
        ),
        serialization_alias="consentToToShareInfoWithOthers",
    )


class Solution(ApiModel):
    """A partner solution (Microsoft Solutions row in Salesforce)."""

    id: str | None = None
    name: str | None = None
    type: str | None = None


class RequirementItem(ApiModel):
    """One industry, product or service the customer needs: `{"id": "Education"}` in Microsoft's documents."""

    id: str | None = None


OpenRequirement = Annotated[RequirementItem | str, _LEFT_TO_RIGHT]
"""An object as documented; a bare string (the shape the connector once assumed) is kept verbatim too."""


class Requirements(ApiModel):
    """What the deal needs. `industries`, `products` and `services` are lists of objects, not of strings:
    typing them as strings made every real referral unreadable."""

    industries: list[OpenRequirement] | None = None
    products: list[OpenRequirement] | None = None
    services: list[OpenRequirement] | None = None
    solutions: list[Solution] | None = None


class ReferralDetails(ApiModel):
    notes: str | None = None
    deal_value: Number | None = None
    currency: str | None = None
    """ISO 4217."""
    closing_date_time: ApiDateTime | None = None
    requirements: Requirements | None = None


class Organization(ApiModel):
    """Who invited the partner: an organization (Microsoft, or another partner), not a person."""

    organization_id: str | None = None
    organization_name: str | None = None


class InviteContext(ApiModel):
    notes: str | None = None
    invited_by: Organization | None = None
    """`{organizationId, organizationName}`; unknown keys (a person's name, in old samples) are kept as extras."""
    assistance_request_code: OpenAssistanceRequestCode | None = None


class ReferralTarget(ApiModel):
    """Who a referral is targeted at, e.g. `{"type": "BusinessProfileLocation", "id": "msft"}`."""

    type: str | None = None
    id: str | None = None


class ApiLink(ApiModel):
    uri: str | None = None
    method: str | None = None
    headers: list[Any] | None = None


class ReferralLinks(ApiModel):
    related_referrals: ApiLink | None = None


class Referral(ApiModel):
    """One Partner Center referral (engagements API), every field of the handbook's schema."""

    id: str | None = None
    engagement_id: str | None = None
    """Shared by the referrals of one co-sell engagement."""
    name: str | None = None
    external_reference_id: str | None = None
    """The CRM's id: the connector puts the Salesforce Opportunity Id here."""
    created_date_time: ApiDateTime | None = None
    updated_date_time: ApiDateTime | None = None
    expiration_date_time: ApiDateTime | None = None
    status: OpenStatus | None = None
    substatus: OpenSubstatus | None = None
    status_reason: str | None = None
    """Free text; required with Declined and Lost."""
    type: OpenType | None = None
    qualification: OpenQualification | None = None
    direction: OpenDirection | None = None
    customer_profile: CustomerProfile | None = None
    consent: Consent | None = None
    details: ReferralDetails | None = None
    team: list[Member] | None = None
    invite_context: InviteContext | None = None
    target: list[ReferralTarget] | None = None
    tags: list[Any] | None = None
    links: ReferralLinks | None = None
    e_tag: str | None = Field(default=None, alias="eTag")

    @property
    def is_closed(self) -> bool:
        """True once the referral reached a terminal state: Partner Center accepts no further transition."""
        return self.status == ReferralStatus.CLOSED or self.substatus in TERMINAL_SUBSTATUSES

    @property
    def is_shared(self) -> bool:
        """True for a co-sell with Microsoft."""
        return self.type == ReferralType.SHARED


def unreadable_reason(error: ValidationError) -> str:
    """Where and why a payload did not fit the model, without the values (they may be personal data)."""
    problems = [f"{'.'.join(str(part) for part in e['loc']) or 'the body'}: {e['msg']}" for e in error.errors()]
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


class UnreadableReferral(BaseModel):
    """A referral of a list page the model could not read: its id (when it has one) and why.

    Why kept apart instead of failing the page: one odd referral must not stop the reconcile or the
    backfill for all the others; it becomes a dead letter with its reason instead.
    """

    id: str | None = None
    external_reference_id: str | None = None
    reason: str


class ReferralPage(ApiModel):
    """One page of `GET /referrals`: the referrals and the link to the next page (absent on the last).

    Referrals the model cannot read are moved from `value` to `unreadable` while the page is read.
    """

    value: list[Referral] = Field(default_factory=list)
    next_link: str | None = Field(default=None, alias="@odata.nextLink")
    unreadable: list[UnreadableReferral] = Field(default_factory=list, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _set_aside_unreadable(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("value"), list):
            return data
        readable: list[Any] = []
        unreadable: list[UnreadableReferral] = list(data.get("unreadable") or [])
        for item in data["value"]:
            if isinstance(item, Referral):
                readable.append(item)
                continue
            try:
                readable.append(Referral.model_validate(item))
            except ValidationError as exc:
                raw = item if isinstance(item, dict) else {}
                unreadable.append(UnreadableReferral(
                    id=raw.get("id") if isinstance(raw.get("id"), str) else None,
                    external_reference_id=(raw.get("externalReferenceId")
                                           if isinstance(raw.get("externalReferenceId"), str) else None),
                    reason=unreadable_reason(exc)))
        return {**data, "value": readable, "unreadable": unreadable}


__all__ = [
    "Address",
    "ApiLink",
    "ApiModel",
    "AssistanceRequestCode",
    "Consent",
    "ContactPreference",
    "CustomerId",
    "CustomerProfile",
    "Direction",
    "InviteContext",
    "Member",
    "Organization",
    "Qualification",
    "Referral",
    "ReferralDetails",
    "ReferralLinks",
    "ReferralPage",
    "ReferralStatus",
    "ReferralSubstatus",
    "ReferralTarget",
    "ReferralType",
    "RequirementItem",
    "Requirements",
    "Solution",
    "TERMINAL_SUBSTATUSES",
    "UnreadableReferral",
    "unreadable_reason",
]
