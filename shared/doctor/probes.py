"""The probes of `python -m shared doctor`: read each service once, hand the facts to `checks`.

Read-only by design: the refresh token is redeemed through a secret keeper that reads the connector's kept
token but holds what Entra rotates in memory (Entra leaves the old refresh token valid, so nothing is lost),
the API budget is not reported to the status table, the webhook registration and the storage accounts are
only read. Each probe catches what it meets and turns it into a verdict: one broken service never hides
the others, and a check that depends on a failed one says so instead of failing obscurely.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.doctor import checks
from shared.doctor.checks import Verdict
from shared.errors import ConfigError, ConnectorError, LimitExceeded, Unavailable

if TYPE_CHECKING:
    from shared.partner_center.token import SecretKeeper
    from shared.salesforce import SalesforceClient
    from shared.settings import Settings

QUICK_TIMEOUT = (5.0, 20.0)
"""A preflight waits a little for an answer, not a sync's worth."""


def _reason(exc: Exception) -> str:
    """What went wrong, safe to print: the connector's own messages name settings and ids, never secrets;
    anything else is named by its type only (its text might quote a request)."""
    if isinstance(exc, ConnectorError):
        return str(exc)
    return f"unexpected {type(exc).__name__}; rerun with the same settings, or check the service's status page"


class ReadThroughSecrets:
    """The connector's kept secrets, read; anything written (a rotated refresh token) stays in memory."""

    def __init__(self, base: SecretKeeper | None) -> None:
        self._base = base
        self._written: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        if name in self._written:
            return self._written[name]
        if self._base is None:
            return None
        try:
            return self._base.get(name)
        except ConnectorError:
            return None

    def put(self, name: str, value: str) -> None:
        self._written[name] = value


def _kept_secrets(settings: Settings) -> SecretKeeper | None:
    """Where the connector keeps the rotated refresh token (Key Vault or the secrets table), if reachable."""
    try:
        if settings.cosell_keyvault_url:
            from shared.keyvault import KeyVaultSecrets

            return KeyVaultSecrets.from_settings(settings)
        from shared.store import Store

        return Store.from_settings(settings).secrets
    except ConnectorError:
        return None


def partner_center(settings: Settings) -> list[Verdict]:
    """Token redemption, its MFA claim, one page of referrals, the webhook registration."""
    from shared.partner_center import PartnerCenterClient, WebhookRegistrationClient, registration
    from shared.partner_center.token import RefreshTokenCredential, build_msal_app
    from shared.partner_center.transport import ApiTransport, RetryPolicy, TimeoutSession

    verdicts: list[Verdict] = []
    session = TimeoutSession(QUICK_TIMEOUT)
    retry = RetryPolicy(max_attempts=2, backoff_base=0.2, backoff_cap=1.0, max_retry_after=5.0)
    seed = settings.partner_center_refresh_token
    credential = RefreshTokenCredential(lambda: build_msal_app(settings, session),
                                        secrets=ReadThroughSecrets(_kept_secrets(settings)), status=None,
                                        seed_refresh_token=seed.get_secret_value() if seed else None)
    try:
        claims = checks.token_claims(credential.token())
    except Exception as exc:  # noqa: BLE001 - every failure is a verdict, never a crash
        verdicts.append(checks.judge_pc_token(_reason(exc)))
        verdicts.append(checks.skipped("partner_center_mfa", "Partner Center MFA", "no token"))
        verdicts.append(checks.skipped("partner_center_referrals", "Partner Center referrals", "no token"))
    else:
        verdicts.append(checks.judge_pc_token(None))
        verdicts.append(checks.judge_mfa(claims))
        transport = ApiTransport(settings.partner_center_api_url, credential, session=session,
                                 rate_limit=settings.cosell_pc_rate_limit, retry=retry, api="Partner Center referrals")
        try:
            page = next(PartnerCenterClient(transport).iter_pages(top=1))
            verdicts.append(checks.judge_referrals(len(page.value), None))
        except Exception as exc:  # noqa: BLE001
            verdicts.append(checks.judge_referrals(None, _reason(exc)))

    own_url, own_url_error = None, None
    try:
        own_url = registration.receiver_url(settings)
    except ConfigError as exc:
        own_url_error = str(exc)
    try:
        current = WebhookRegistrationClient.from_settings(settings, session=session, retry=retry).get_registration()
        verdicts.append(checks.judge_webhook(current, own_url, own_url_error=own_url_error))
    except Exception as exc:  # noqa: BLE001
        verdicts.append(checks.judge_webhook(None, own_url, error=_reason(exc)))
    return verdicts


def _identity(client: SalesforceClient) -> tuple[str, dict[str, Any]]:
    """Log in once with the configured grant and read the identity URL: (grant, identity document)."""
    from shared.errors import AuthExpired
    from shared.salesforce.auth import fetch_token

    token = fetch_token(client.session, client.login_url, client.credentials)
    if not token.id:
        raise Unavailable(f"Salesforce login at {client.login_url} answered without an identity URL")
    response = client.session.get(token.id, headers={"Authorization": f"Bearer {token.access_token}",
                                                     "Accept": "application/json"}, timeout=QUICK_TIMEOUT)
    if response.status_code in (401, 403):
        raise AuthExpired(f"Salesforce refused to show the logged-in user's identity ({response.status_code})")
    if response.status_code != 200:
        raise Unavailable(f"Salesforce identity URL answered {response.status_code}")
    identity = response.json()
    identity["instance_url"] = token.instance_url
    return client.credentials.grant.value, identity


def salesforce(settings: Settings, *, permission_set: str = checks.INTEGRATION_PERMISSION_SET) -> list[Verdict]:
    """Login, mapping against the describe, writable fields, permission set, API budget, org id."""
    from shared.salesforce import SalesforceClient
    from shared.salesforce.retry import RetryPolicy

    dependent = [("salesforce_mapping", "Mapping against the org"),
                 ("salesforce_writable", "Fields writable by the integration user"),
                 ("salesforce_permission_set", "Permission set"), ("salesforce_api_budget", "Salesforce API budget"),
                 ("salesforce_org_id", "Outbound messages: SALESFORCE_ORG_ID")]
    try:
        client = SalesforceClient.from_settings(settings, retry=RetryPolicy(attempts=1, backoff=0.2, timeout=20.0))
        grant, identity = _identity(client)
    except Exception as exc:  # noqa: BLE001
        return [checks.judge_sf_login(None, None, _reason(exc)),
                *(checks.skipped(check, title, "no Salesforce login") for check, title in dependent)]
    with client.urgent():  # a person is waiting: the budget share reserved for background work does not apply
        return [checks.judge_sf_login(grant, identity.get("instance_url"), None),
                *_org_checks(client, settings, identity, permission_set)]


def _org_checks(client: SalesforceClient, settings: Settings, identity: dict[str, Any],
                permission_set: str) -> list[Verdict]:
    """Everything after the login: the mapping against the describe, writability, permission set, budget, org id."""
    from shared.mapping import Mapping, MappingError
    from shared.mapping.loader import read_document, sobjects_of

    verdicts: list[Verdict] = []
    username = identity.get("username")

    def attempt(make: Callable[[], Verdict], fail: Callable[[str], Verdict]) -> None:
        try:
            verdicts.append(make())
        except Exception as exc:  # noqa: BLE001
            verdicts.append(fail(_reason(exc)))

    hidden: list[str] = ["not checked"]
    """Mapping problems that say the user cannot see a mapped object or field (what the permission set grants)."""

    def mapping_verdicts() -> list[Verdict]:
        document = read_document(settings.mapping_path)
        schema = client.org_schema(sobjects_of(document))
        try:
            mapping = Mapping.from_document(document, source=str(settings.mapping_path), describe=schema)
        except MappingError as exc:
            problems = [str(p) for p in exc.problems]
            hidden[:] = [p for p in problems if "unknown Salesforce" in p]
            try:  # the fields it writes can still be checked when only the org disagrees with the file
                mapping = Mapping.from_document(document, source=str(settings.mapping_path))
            except MappingError:
                return [checks.judge_mapping(problems),
                        checks.skipped("salesforce_writable", "Fields writable by the integration user",
                                       "the mapping file itself is invalid")]
            return [checks.judge_mapping(problems),
                    checks.judge_writable(checks.missing_access(checks.write_needs(mapping), schema))]
        hidden.clear()
        return [checks.judge_mapping([]),
                checks.judge_writable(checks.missing_access(checks.write_needs(mapping), schema))]

    try:
        verdicts += mapping_verdicts()
    except Exception as exc:  # noqa: BLE001
        verdicts += [checks.judge_mapping([], _reason(exc)), checks.judge_writable([], _reason(exc))]

    access_ok = not hidden and all(v.ok for v in verdicts if v.check == "salesforce_writable")

    def assigned() -> Verdict:
        user_id = str(identity.get("user_id") or "").replace("'", "")
        try:
            rows = list(client.query(
                f"SELECT PermissionSet.Name FROM PermissionSetAssignment WHERE AssigneeId = '{user_id}'"))
        except ConnectorError as exc:
            if "INVALID_TYPE" not in str(exc):
                raise
            names: list[str] | None = None  # the object is hidden from users without View Setup
        else:
            names = [str((row.get("PermissionSet") or {}).get("Name")) for row in rows]
        return checks.judge_permission_set(names, username, expected=permission_set, access_ok=access_ok)

    attempt(assigned, lambda e: checks.judge_permission_set([], username, expected=permission_set, error=e))

    def budget() -> Verdict:
        try:
            daily = client.limits().get("DailyApiRequests") or {}
        except (Unavailable, LimitExceeded):
            raise
        except ConnectorError:
            # /limits needs View Setup and Configuration; every answer's Sforce-Limit-Info carries the same count
            usage = client.budget.usage
            if usage is None:
                raise
            return checks.judge_budget(usage.used, usage.limit, settings.cosell_sf_budget_share)
        limit, remaining = daily.get("Max"), daily.get("Remaining")
        used = int(limit) - int(remaining) if limit is not None and remaining is not None else None
        return checks.judge_budget(used, int(limit) if limit is not None else None, settings.cosell_sf_budget_share)

    attempt(budget, lambda e: checks.judge_budget(None, None, settings.cosell_sf_budget_share, e))
    verdicts.append(checks.judge_org_id(settings.salesforce_org_id, identity.get("organization_id")))
    return verdicts


def storage(settings: Settings) -> Verdict:
    """List one table and one queue: proves the account answers and the credential may read it."""
    from azure.core.exceptions import AzureError
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    from shared.store.connection import storage_credential, storage_target

    try:
        target = storage_target(settings)
    except ConfigError as exc:
        return checks.judge_storage(str(exc), None)
    options = {"retry_total": 0, "connection_timeout": 5, "read_timeout": 10}

    def probe(kind: str, build: Callable[[], Any], listing: str) -> str | None:
        try:
            service = build()
        except ValueError:
            return f"{kind} storage: the connection setting is malformed: check COSELL_STORAGE / AzureWebJobsStorage"
        try:
            next(iter(getattr(service, listing)(results_per_page=1).by_page()), None)
            return None
        except AzureError as exc:
            return (f"{kind} storage at {service.url} did not answer a read ({type(exc).__name__}): check "
                    "COSELL_STORAGE / AzureWebJobsStorage, the network path, and (managed identity) the data role "
                    "on the account")

    if target.connection_string is not None:
        connection = target.connection_string
        table_error = probe("Table", lambda: TableServiceClient.from_connection_string(connection, **options),
                            "list_tables")
        queue_error = probe("Queue", lambda: QueueServiceClient.from_connection_string(connection, **options),
                            "list_queues")
    else:
        credential = storage_credential()
        table_error = probe("Table", lambda: TableServiceClient(target.table_url, credential=credential, **options),
                            "list_tables")
        queue_error = probe("Queue", lambda: QueueServiceClient(target.queue_url, credential=credential, **options),
                            "list_queues")
    return checks.judge_storage(table_error, queue_error)


def run_all(settings: Settings, *, permission_set: str = checks.INTEGRATION_PERMISSION_SET) -> list[Verdict]:
    """Every check, in the order a partner fixes them: Partner Center, Salesforce, storage."""
    return [*partner_center(settings), *salesforce(settings, permission_set=permission_set), storage(settings)]


__all__ = ["ReadThroughSecrets", "partner_center", "run_all", "salesforce", "storage"]

