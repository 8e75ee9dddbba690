"""The verdicts of `python -m shared doctor`: plain functions, facts in, one `Verdict` out.

Why separate from the probes: each verdict's wording is what a partner reads before going live, so it is
tested on its own for every case (no network, no storage), and the probes (`shared.doctor.probes`) only
gather facts. A verdict never carries a secret: tokens are read for their claims here and never kept,
URLs are shown masked, and error texts come from the connector's own errors, which name settings and
request ids only.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from shared.models.events import REFERRAL_EVENTS
from shared.partner_center.registration import masked, same_endpoint

if TYPE_CHECKING:
    from shared.mapping import Mapping as FieldMapping
    from shared.models.webhooks import WebhookRegistration
    from shared.salesforce.describe import OrgSchema

INTEGRATION_PERMISSION_SET = "Partner_Center_Co_sell_Integration"
"""The permission set `salesforce/force-app` deploys for the integration user."""
WANTED_EVENTS = ("referral-created", "referral-updated")
"""The events without which referrals reach Salesforce only through the reconcile timer."""


@dataclass(frozen=True)
class Verdict:
    """One line of the doctor's report.

    Attributes:
        check: a stable id for tooling (`--json`).
        title: what was checked, in a few words.
        ok: ✓ or ✗.
        detail: what was found, and on ✗ what to do about it.
    """

    check: str
    title: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.title}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def skipped(check: str, title: str, because: str) -> Verdict:
    """A check that could not run because an earlier one failed: a ✗ that points at that one."""
    return Verdict(check, title, False, f"not checked: {because} (fix that first)")


# Partner Center --------------------------------------------------------------------------------------

def token_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT, read without verifying it (only to report on them); None if it is not one.

    Entra's access tokens are JWTs; the doctor looks at `amr` only, and never prints or keeps the token.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        return None
    return claims if isinstance(claims, dict) else None


def judge_pc_token(error: str | None) -> Verdict:
    """The refresh token was (or was not) redeemed for an App+User access token."""
    title = "Partner Center token"
    if error:
        return Verdict("partner_center_token", title, False, error)
    return Verdict("partner_center_token", title, True,
                   "the refresh token was redeemed for an App+User token of the referrals API")


def judge_mfa(claims: Mapping[str, Any] | None) -> Verdict:
    """Whether the token's sign-in carried MFA (`amr` holds `mfa`), which Partner Center requires of App+User calls."""
    title = "Partner Center MFA"
    if claims is None:
        return Verdict("partner_center_mfa", title, True,
                       "the access token's claims are not readable here; the referrals read below is the proof")
    methods = claims.get("amr")
    methods = [str(m) for m in methods] if isinstance(methods, list) else ([str(methods)] if methods else [])
    if "mfa" in methods:
        return Verdict("partner_center_mfa", title, True, "the sign-in behind the refresh token used MFA (amr: mfa)")
    shown = ", ".join(methods) or "none"
    return Verdict("partner_center_mfa", title, False,
                   f"the sign-in behind the refresh token did not use MFA (amr: {shown}); Partner Center refuses "
                   "such App+User calls (error 900421): sign in again as the Referrals admin user with MFA and put "
                   "the new refresh token in PARTNER_CENTER_REFRESH_TOKEN")


def judge_referrals(count: int | None, error: str | None) -> Verdict:
    """One page of `GET /referrals?$top=1` was read."""
    title = "Partner Center referrals"
    if error:
        return Verdict("partner_center_referrals", title, False, error)
    found = "no referral yet" if not count else "a referral was read"
    return Verdict("partner_center_referrals", title, True, f"the referrals list answered ({found})")


def judge_webhook(registration: WebhookRegistration | None, own_url: str | None, *, error: str | None = None,
                  own_url_error: str | None = None) -> Verdict:
    """The tenant's webhook registration exists, points at this app and carries the referral events."""
    title = "Partner Center webhook"
    if error:
        return Verdict("partner_center_webhook", title, False, error)
    if registration is None or not registration.webhook_url:
        return Verdict("partner_center_webhook", title, False,
                       "no webhook is registered: run `python -m shared register-webhook` once the app is deployed")
    where = masked(registration.webhook_url)
    if own_url is None:
        return Verdict("partner_center_webhook", title, False,
                       f"registered to {where}, but this app's own URL is unknown ({own_url_error}): set "
                       "COSELL_PUBLIC_URL to the app's public base URL so the registration can be compared")
    if not same_endpoint(registration.webhook_url, own_url):
        return Verdict("partner_center_webhook", title, False,
                       f"registered to {where}, not to this app ({masked(own_url)}): if nothing else should get "
                       "the events, run `python -m shared register-webhook --overwrite`")
    missing = [e for e in WANTED_EVENTS if e not in registration.webhook_events]
    if missing:
        return Verdict("partner_center_webhook", title, False,
                       f"points at this app but is not subscribed to {', '.join(missing)}: run "
                       "`python -m shared register-webhook` to subscribe the referral events")
    others = sorted({e.value for e in REFERRAL_EVENTS} - set(registration.webhook_events) - set(WANTED_EVENTS))
    extra = f" (not subscribed: {', '.join(others)})" if others else ""
    return Verdict("partner_center_webhook", title, True, f"points at this app ({where}){extra}")


# Salesforce -----------------------------------------------------------------------------------------

def judge_sf_login(grant: str | None, instance_url: str | None, error: str | None) -> Verdict:
    """Salesforce issued a token for the configured grant."""
    title = "Salesforce login"
    if error:
        return Verdict("salesforce_login", title, False, error)
    detail = f"logged in with the {grant} grant to {instance_url}"
    if grant == "password":
        detail += ("; Salesforce is retiring the username-password flow for connected apps: move to the JWT "
                   "bearer flow (SALESFORCE_PRIVATE_KEY) before production")
    return Verdict("salesforce_login", title, True, detail)


def judge_mapping(problems: Sequence[str], error: str | None = None, *, limit: int = 5) -> Verdict:
    """The mapping file checked against the org's describe (fields, picklist values, stages with phases)."""
    title = "Mapping against the org"
    if error:
        return Verdict("salesforce_mapping", title, False, error)
    if not problems:
        return Verdict("salesforce_mapping", title, True,
                       "every mapped object, field, picklist value and stage exists in the org, and every stage has a phase")
    shown = "; ".join(problems[:limit]) + (f"; and {len(problems) - limit} more" if len(problems) > limit else "")
    return Verdict("salesforce_mapping", title, False,
                   f"{len(problems)} problem(s): {shown}. Deploy salesforce/force-app and assign its permission set, "
                   "or fix the mapping (`python -m shared validate-mapping --describe-from-org` lists them all)")


@dataclass(frozen=True)
class FieldNeed:
    """A Salesforce field the connector writes, and how (`createable` on insert/upsert, `updateable` on update).

    `optional` fields are mapped only where the org has them (`ifFieldExists`, e.g. CurrencyIsoCode).
    """

    sobject: str
    field: str
    access: str
    optional: bool = False


def write_needs(mapping: FieldMapping) -> list[FieldNeed]:
    """Every field the connector writes with this mapping, and whether on create, on update or both.

    Why from the mapping: the engine creates opportunities by upsert on the referral id (create and
    update), creates accounts, contacts and their contact roles, upserts solution rows on their key, and
    updates opportunities with the fields flowing to Salesforce plus its own fields (audit, sync status).
    """
    needs: list[FieldNeed] = []
    optional = {(spec.get("sobject"), f.get("salesforce")) for spec in mapping.document.values() if isinstance(spec, dict)
                for f in spec.get("fields", []) if isinstance(f, dict) and f.get("ifFieldExists")}

    def need(sobject: str, name: str | None, *accesses: str) -> None:
        if name:
            needs.extend(FieldNeed(sobject, name, access, (sobject, name) in optional) for access in accesses)

    opportunity = mapping.opportunity.sobject
    for f in mapping.opportunity.fields:
        if f.to_salesforce:
            need(opportunity, f.sf_field, "updateable")
        if f.copied_on_create(True):
            need(opportunity, f.sf_field, "createable")
    own = mapping.own_fields
    need(opportunity, own.referral_id, "createable", "updateable")
    need(opportunity, own.audit, "createable", "updateable")
    need(opportunity, own.sync_status, "createable", "updateable")
    need(opportunity, mapping.stage.sf_field, "createable", *(("updateable",) if mapping.stage.to_salesforce else ()))
    need(opportunity, mapping.stages.reason_field, "updateable")
    for name in mapping.opportunity_defaults:
        need(opportunity, name, "createable")
    for section in (mapping.account, mapping.contacts):
        for f in section.fields:
            if f.copied_on_create(True):
                need(section.sobject, f.sf_field, "createable")
    if mapping.contact_rules.role:
        for name in ("OpportunityId", "ContactId", "Role"):
            need("OpportunityContactRole", name, "createable")
    rows = mapping.solution_rows_mapping
    for f in rows.fields:
        if f.to_salesforce or f.copied_on_create(True):
            need(rows.sobject, f.sf_field, "createable", "updateable")
    need(rows.sobject, mapping.solution_rules.parent_field, "createable")
    need(rows.sobject, mapping.solution_rules.key_field, "createable", "updateable")
    return list(dict.fromkeys(needs))


def missing_access(needs: Iterable[FieldNeed], schema: OrgSchema) -> list[str]:
    """The needs the integration user's describe does not grant, as `Object.Field (not updateable)`, or
    `(not visible)` when the describe does not show the field to this user at all (no field-level access, or
    not deployed). An optional field the org lacks is no need."""
    missing = []
    for need in needs:
        described = schema.field(need.sobject, need.field)
        if described is None:
            if not need.optional:
                missing.append(f"{need.sobject}.{need.field} (not visible)")
        elif not getattr(described, need.access):
            missing.append(f"{need.sobject}.{need.field} (not {need.access})")
    return list(dict.fromkeys(missing))


def judge_writable(missing: Sequence[str], error: str | None = None, *, limit: int = 6) -> Verdict:
    """The integration user may write every field the connector writes."""
    title = "Fields writable by the integration user"
    if error:
        return Verdict("salesforce_writable", title, False, error)
    if not missing:
        return Verdict("salesforce_writable", title, True, "every field the connector writes is createable/updateable")
    shown = ", ".join(missing[:limit]) + (f" and {len(missing) - limit} more" if len(missing) > limit else "")
    return Verdict("salesforce_writable", title, False,
                   f"the integration user cannot write {shown}: grant edit access to these fields in the permission "
                   f"set {INTEGRATION_PERMISSION_SET} (salesforce/force-app) and assign it to the user")


def judge_permission_set(assigned: Sequence[str] | None, username: str | None, *,
                         expected: str = INTEGRATION_PERMISSION_SET, access_ok: bool = False,
                         error: str | None = None) -> Verdict:
    """The integration user holds the connector's permission set.

    Args:
        assigned: the names of the user's permission sets; None when PermissionSetAssignment is not readable
            (Salesforce shows it only to users with View Setup and Configuration, Assign Permission Sets or
            Manage Users, which an integration user rarely has).
        access_ok: the mapping and writability checks passed, so the permissions the set grants are in effect
            (the evidence left when the assignment itself cannot be read).
    """
    title = "Permission set"
    if error:
        return Verdict("salesforce_permission_set", title, False, error)
    who = username or "the integration user"
    assign = f"deploy salesforce/force-app, then `sf org assign permset --name {expected} --on-behalf-of {who}`"
    if assigned is None:
        if access_ok:
            return Verdict("salesforce_permission_set", title, True,
                           f"{who} may not read permission set assignments (that needs View Setup and "
                           f"Configuration), but it sees and may write every mapped field, as {expected} grants")
        return Verdict("salesforce_permission_set", title, False,
                       f"{who} may not read permission set assignments and lacks access to mapped fields: {assign}")
    if expected in assigned:
        return Verdict("salesforce_permission_set", title, True, f"{expected} is assigned to {who}")
    return Verdict("salesforce_permission_set", title, False, f"{expected} is not assigned to {who}: {assign}")


def judge_budget(used: int | None, limit: int | None, share: float, error: str | None = None) -> Verdict:
    """The org's daily API requests (`/limits` DailyApiRequests) leave room under COSELL_SF_BUDGET_SHARE."""
    title = "Salesforce API budget"
    if error:
        return Verdict("salesforce_api_budget", title, False, error)
    if used is None or not limit:
        return Verdict("salesforce_api_budget", title, False,
                       "the org's /limits answer has no DailyApiRequests: check the integration user's API access")
    ratio = used / limit
    detail = f"{used:,} of {limit:,} daily API requests used ({ratio:.0%})"
    if ratio >= share:
        return Verdict("salesforce_api_budget", title, False,
                       f"{detail}, above the {share:.0%} the connector may use (COSELL_SF_BUDGET_SHARE): background "
                       "work would pause at once; wait for the 24-hour window, raise the org's limit, or find "
                       "the integration spending it")
    return Verdict("salesforce_api_budget", title, True, f"{detail}; the connector may use up to {share:.0%}")


def same_org(a: str, b: str) -> bool:
    """Two Salesforce ids name the same org: the 15-character form is the 18-character one's prefix."""
    return a[:15] == b[:15] and len(a) in (15, 18) and len(b) in (15, 18)


def judge_org_id(setting: str | None, org_id: str | None, error: str | None = None) -> Verdict:
    """SALESFORCE_ORG_ID is this org's id, so the outbound-message route accepts its messages."""
    title = "Outbound messages: SALESFORCE_ORG_ID"
    if error:
        return Verdict("salesforce_org_id", title, False, error)
    if not setting:
        return Verdict("salesforce_org_id", title, False,
                       f"not set: set SALESFORCE_ORG_ID to {org_id}, or every outbound message from the org is refused")
    if org_id and same_org(setting.strip(), org_id):
        return Verdict("salesforce_org_id", title, True, f"matches the org ({org_id})")
    return Verdict("salesforce_org_id", title, False,
                   f"is {setting.strip()}, but the integration user's org is {org_id}: set SALESFORCE_ORG_ID to "
                   f"{org_id} (outbound messages from any other org are refused)")


# Storage --------------------------------------------------------------------------------------------

def judge_storage(table_error: str | None, queue_error: str | None) -> Verdict:
    """Table and Queue storage answered a read."""
    title = "Storage"
    problems = [e for e in (table_error, queue_error) if e]
    if problems:
        return Verdict("storage", title, False, "; ".join(problems))
    return Verdict("storage", title, True, "Table and Queue storage answered")


def exit_code(verdicts: Iterable[Verdict]) -> int:
    """0 when every check passed, 1 otherwise."""
    return 0 if all(v.ok for v in verdicts) else 1


__all__ = [
    "INTEGRATION_PERMISSION_SET",
    "FieldNeed",
    "Verdict",
    "exit_code",
    "judge_budget",
    "judge_mapping",
    "judge_mfa",
    "judge_org_id",
    "judge_pc_token",
    "judge_permission_set",
    "judge_referrals",
    "judge_sf_login",
    "judge_storage",
    "judge_webhook",
    "judge_writable",
    "missing_access",
    "same_org",
    "skipped",
    "token_claims",
    "write_needs",
]
