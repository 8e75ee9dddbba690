"""The Salesforce simulator: `python -m sandbox.salesforce --port N --ca DIR`, or `SalesforceSim` in-process.

It serves, over HTTPS with a certificate from the sandbox authority, the OAuth token endpoint (JWT bearer,
client credentials, password + security token) and the REST subset the connector uses (see `sf_rest`),
against an org whose schema is the standard objects plus the project's own `salesforce/force-app`
metadata (see `sf_schema`). Two users: the integration user (limited by the metadata's permission set,
as in a real org) and a seller (everything), so `LastModifiedById` tells their writes apart.

Routes that play a person or break things live under `/_sandbox/` (never counted against the API limit):

| route | effect |
| --- | --- |
| `GET /_sandbox/state` | API usage, record counts, pending late commits and lock faults |
| `POST /_sandbox/limits` `{"limit": 1000, "used": 990, "concurrent_refusals": 2}` | set the daily API limit and/or usage (then 403 `REQUEST_LIMIT_EXCEEDED`); refuse the next calls as if 25 long requests ran |
| `POST /_sandbox/sessions/expire` `{"username": optional}` | end sessions: the next call is 401 `INVALID_SESSION_ID` |
| `POST /_sandbox/permission-sets` `{"username": optional, "permission_set": "Name" or null}` | assign the metadata's permission set to a user (default: the integration user), or take it away (null: the user keeps minimum access, no custom fields), as `PermissionSetAssignment` shows |
| `POST /_sandbox/lock-rows` `{"count": 2}` | the next 2 record writes fail with `UNABLE_TO_LOCK_ROW` |
| `POST /_sandbox/late-commits` `{"count": 1, "delay": 5}` | the next record write keeps its timestamp but becomes visible only 5 s later |
| `POST /_sandbox/seller/sobjects/{type}` | create a record as the seller |
| `PATCH`/`DELETE /_sandbox/seller/sobjects/{type}/{id}` | edit / delete a record as the seller |
| `GET /_sandbox/records/{type}` | every record of a type, deleted ones included, all fields |
| `GET /_sandbox/outbound` | outbound messages: endpoint, pending, acknowledged, the latest deliveries |
| `POST /_sandbox/outbound` `{"endpoint": "https://.../api/salesforce/outbound?code=..."}` | where the Flows' outbound messages go (null: nowhere), as an admin sets it per environment |
| `POST /_sandbox/outbound/faults` `{"kind": "drop", "count": 1, "delay": 5}` | drop, delay or duplicate on the next notifications (`"count": null`: all of them until `DELETE /_sandbox/outbound/faults`) |
| `/_sandbox/faults` | httpsim's generic faults: 5xx, 429, slow answers, dropped connections |
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import ssl
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sandbox.ca import SandboxCA
from sandbox.httpsim import HttpError, Request, Response, Router, SimServer
from sandbox.sf_auth import Authenticator, ClientApp
from sandbox.sf_org import Org, RecordError, RequestError, SimUser
from sandbox.sf_outbound import Outbox, load_triggers
from sandbox.sf_rest import MAX_VERSION, RestApi, TokenEndpoint
from sandbox.sf_model import DEFAULT_CURRENCIES, DEFAULT_STAGES, ObjectDef, Stage
from sandbox.sf_schema import DEFAULT_METADATA_DIR, build_schema
from sandbox.sf_values import format_value, now_utc, normalize_id
from sandbox.soql import bind, parse, run

INTEGRATION_PERMISSION_SET = "Partner_Center_Co_sell_Integration"


@dataclass(frozen=True)
class Credentials:
    """Everything a client needs to log in to the simulator (sandbox values, never real secrets)."""

    login_url: str
    client_id: str
    client_secret: str
    username: str
    password: str
    security_token: str
    private_key_pem: str
    certificate_pem: str
    seller_username: str
    seller_password: str
    seller_security_token: str
    org_id: str = ""

    def settings_env(self) -> dict[str, str]:
        """The connector's settings (environment variables) for this simulator, all three grants possible."""
        return {
            "SALESFORCE_LOGIN_URL": self.login_url,
            "SALESFORCE_USERNAME": self.username,
            "SALESFORCE_CLIENT_ID": self.client_id,
            "SALESFORCE_PRIVATE_KEY": self.private_key_pem,
            "SALESFORCE_CLIENT_SECRET": self.client_secret,
            "SALESFORCE_PASSWORD": self.password,
            "SALESFORCE_SECURITY_TOKEN": self.security_token,
            "SALESFORCE_API_VERSION": f"{MAX_VERSION - 2}.0",
            "SALESFORCE_ORG_ID": self.org_id,
        }


class SalesforceSim:
    """A running simulator: `start()`, `url`, `stop()`; also a context manager.

    Args:
        ca: the sandbox authority (server certificate; and the JWT client certificate when none is given).
        port: 0 picks a free port.
        metadata_dir: the `force-app` folder whose metadata the org gets (the project's own by default).
        multi_currency: a multi-currency org (`CurrencyIsoCode` fields) or a single-currency one.
        currencies: active currencies, corporate currency first.
        stages: the Opportunity stages.
        api_limit: the daily API request limit.
        batch_size: the default query batch size.
        jwt_certificate_pem / jwt_private_key_pem: the client app's JWT certificate and the key that signs
            with it; issued from `ca` when not given.
        clock: the time source of the org (tests may pass a controllable one).
        ssl_context: a server context from `ca.server_ssl_context()` to reuse (a fresh one when not given;
            tests share one because issuing a certificate is the slow part of starting).
        secret_marker: appended to the client secret and the users' passwords and security tokens, and put
            into every access token issued, so a test can look for it in logs and storage.
        my_domain: answer as the org's My Domain URL (the default); False answers as login.salesforce.com or
            test.salesforce.com, which refuse the client credentials flow.
        outbound_endpoint: where the metadata's Flows send their outbound messages (None: nowhere, until
            `POST /_sandbox/outbound` sets it); `outbound_verify` is the CA bundle for an HTTPS endpoint.
    """

    def __init__(self, ca: SandboxCA, *, port: int = 0, metadata_dir: Path | str = DEFAULT_METADATA_DIR,
                 multi_currency: bool = False, currencies: Sequence[str] = DEFAULT_CURRENCIES,
                 stages: Sequence[Stage] = DEFAULT_STAGES, api_limit: int = 100_000, batch_size: int = 2000,
                 jwt_certificate_pem: bytes | None = None, jwt_private_key_pem: bytes | None = None,
                 client_id: str = "3MVG9sandbox.CoSellConnector", client_secret: str = "sandbox-client-secret",
                 clock: Callable[[], dt.datetime] = now_utc, ssl_context: ssl.SSLContext | None = None,
                 secret_marker: str = "", my_domain: bool = True, outbound_endpoint: str | None = None,
                 outbound_verify: str | bool = True) -> None:
        if jwt_certificate_pem is None or jwt_private_key_pem is None:
            issued = ca.issue("cosell-connector-jwt", organization="Co-sell Connector")
            jwt_certificate_pem, jwt_private_key_pem = issued.cert_pem, issued.key_pem
        schema = build_schema(metadata_dir, multi_currency=multi_currency, currencies=currencies, stages=stages)
        self.org = Org(schema, api_limit=api_limit, clock=clock)
        permission_set = INTEGRATION_PERMISSION_SET if INTEGRATION_PERMISSION_SET in schema.permission_sets else None
        self.integration = self.org.add_user("integration@cosell.sandbox", first_name="Co-sell",
                                             last_name="Integration", password="sandbox-password" + secret_marker,
                                             security_token="SANDBOXTOKEN1" + secret_marker,
                                             permission_set=permission_set)
        self.seller = self.org.add_user("seller@cosell.sandbox", first_name="Sam", last_name="Seller",
                                        password="seller-password" + secret_marker,
                                        security_token="SANDBOXTOKEN2" + secret_marker)
        self.auth = Authenticator(self.org, ClientApp(client_id, client_secret + secret_marker, jwt_certificate_pem,
                                                      run_as=self.integration.username), token_marker=secret_marker,
                                  my_domain=my_domain)
        self.api = RestApi(self.org, self.auth, batch_size=batch_size)
        router = Router()
        TokenEndpoint(self.auth).register(router)
        self.api.register(router)
        self._sandbox_routes(router)
        self.server = SimServer(router, port=port, ssl_context=ssl_context or ca.server_ssl_context())
        self._jwt = (jwt_certificate_pem, jwt_private_key_pem)
        self.outbox = Outbox(self.org, load_triggers(schema, metadata_dir), lambda: self.url,
                             endpoint=outbound_endpoint, verify=outbound_verify)

    # -- lifecycle

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def credentials(self) -> Credentials:
        return Credentials(
            login_url=self.url, client_id=self.auth.app.client_id, client_secret=self.auth.app.client_secret,
            username=self.integration.username, password=self.integration.password,
            security_token=self.integration.security_token, private_key_pem=self._jwt[1].decode(),
            certificate_pem=self._jwt[0].decode(), seller_username=self.seller.username,
            seller_password=self.seller.password, seller_security_token=self.seller.security_token,
            org_id=self.org.org_id)

    def start(self) -> SalesforceSim:
        self.server.start()
        self.outbox.start()
        return self

    def stop(self) -> None:
        self.outbox.stop()
        self.server.stop()

    def __enter__(self) -> SalesforceSim:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- in-process helpers (tests and the demo act as a person without HTTP; no API usage)

    def _user(self, who: str) -> SimUser:
        return {"seller": self.seller, "integration": self.integration}.get(who) or self.org.users[who]

    def create(self, sobject: str, fields: dict[str, Any], *, as_user: str = "seller") -> str:
        """Create a record as a user ("seller", "integration" or a username); RecordError/RequestError on refusal."""
        user = self._user(as_user)
        with self.org.lock:
            self.org.commit_due()
            obj = self._object(sobject)
            return self.org.insert(obj, self.org.parse_fields(obj, fields, self.org.access(user)), user)

    def update(self, sobject: str, record_id: str, fields: dict[str, Any], *, as_user: str = "seller") -> None:
        """Update a record as a user (the stamps move even when nothing changes, as in Salesforce)."""
        user = self._user(as_user)
        with self.org.lock:
            self.org.commit_due()
            obj = self._object(sobject)
            self.org.update(obj, _id(record_id), self.org.parse_fields(obj, fields, self.org.access(user)), user)

    def delete(self, sobject: str, record_id: str, *, as_user: str = "seller") -> None:
        user = self._user(as_user)
        with self.org.lock:
            self.org.commit_due()
            self.org.delete(self._object(sobject), _id(record_id), user)

    def record(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        """A record with every field in its JSON form (deleted ones too), or None."""
        with self.org.lock:
            self.org.commit_due()
            obj = self._object(sobject)
            found = self.org.find(_id(record_id))
            if found is None:
                return None
            return {name: format_value(d, found.get(name)) for name, d in obj.fields.items()}

    def query(self, soql: str, *, as_user: str = "integration", include_deleted: bool = False) -> list[dict]:
        """Run SOQL without HTTP, paging or API usage (test assertions, the demo)."""
        user = self._user(as_user)
        with self.org.lock:
            self.org.commit_due()
            plan = bind(parse(soql), self.org.schema, self.org.access(user))
            return run(plan, self.org, include_deleted=include_deleted, version=f"v{MAX_VERSION}.0").records

    def _object(self, sobject: str) -> ObjectDef:
        obj = self.org.schema.object(sobject)
        if obj is None:
            raise RequestError(404, "NOT_FOUND", f"no sObject type {sobject}")
        return obj

    # -- /_sandbox/

    def _sandbox_routes(self, router: Router) -> None:  # noqa: C901 - one place listing the sandbox routes
        org = self.org

        def guarded(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
            def answer(request: Request) -> Response:
                try:
                    with org.lock:
                        org.commit_due()
                        return handler(request)
                except (RequestError, RecordError) as exc:
                    error = exc if isinstance(exc, RequestError) else exc.as_request_error()
                    return Response(error.status, error.body())
            return answer

        def body(request: Request) -> dict[str, Any]:
            data = request.json()
            if data is None:
                return {}
            if not isinstance(data, dict):
                raise HttpError(400, {"error": "expected a JSON object"})
            return data

        def count(data: dict[str, Any], name: str, default: int | float) -> Any:
            value = data.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise HttpError(400, {"error": f"{name} must be a non-negative number"})
            return value

        @router.route("GET", "/services/data")
        def versions(request: Request) -> Response:
            return Response(200, [{"label": f"v{v}.0", "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
                                  for v in range(MAX_VERSION - 5, MAX_VERSION + 1)])

        @router.route("GET", "/_sandbox/state")
        @guarded
        def state(_: Request) -> Response:
            return Response(200, {
                "api": {"used": org.api.used, "limit": org.api.limit},
                "records": {name: org.count(name) for name in org.schema.objects},
                "pending_late_commits": org.pending_count(), "lock_faults": org.lock_faults,
                "tokens_issued": self.auth.tokens_issued,
                "users": {u.username: u.id for u in org.users.values()},
                "multi_currency": org.schema.multi_currency,
            })

        @router.route("POST", "/_sandbox/limits")
        @guarded
        def limits(request: Request) -> Response:
            data = body(request)
            org.api.limit = int(count(data, "limit", org.api.limit))
            org.api.used = int(count(data, "used", org.api.used))
            org.api.concurrent_refusals = int(count(data, "concurrent_refusals", org.api.concurrent_refusals))
            return Response(200, {"used": org.api.used, "limit": org.api.limit,
                                  "concurrent_refusals": org.api.concurrent_refusals})

        @router.route("POST", "/_sandbox/sessions/expire")
        @guarded
        def expire(request: Request) -> Response:
            return Response(200, {"expired": self.auth.expire_sessions(body(request).get("username"))})

        @router.route("POST", "/_sandbox/lock-rows")
        @guarded
        def lock_rows(request: Request) -> Response:
            org.lock_faults = int(count(body(request), "count", 1))
            return Response(200, {"lock_faults": org.lock_faults})

        @router.route("POST", "/_sandbox/late-commits")
        @guarded
        def late_commits(request: Request) -> Response:
            data = body(request)
            delay = float(count(data, "delay", 5.0))
            org.late_commits.extend([delay] * int(count(data, "count", 1)))
            return Response(200, {"late_commits": len(org.late_commits)})

        @router.route("POST", "/_sandbox/permission-sets")
        @guarded
        def permission_sets(request: Request) -> Response:
            data = body(request)
            who = str(data.get("username") or "integration")
            if who not in ("integration", "seller") and who not in org.users:
                raise HttpError(404, {"error": f"no user {who}"})
            user = self._user(who)
            name = data.get("permission_set")
            if name is not None and (not isinstance(name, str) or name not in org.schema.permission_sets):
                raise HttpError(400, {"error": f"permission_set must be null or one of {sorted(org.schema.permission_sets)}"})
            org.assign_permission_set(user, name)
            return Response(200, {"username": user.username, "permission_set": user.permission_set})

        @router.route("POST", "/_sandbox/seller/sobjects/{sobject}")
        @guarded
        def seller_create(request: Request) -> Response:
            record_id = self.create(request.params["sobject"], body(request))
            return Response(201, {"id": record_id, "success": True, "errors": []})

        @router.route("PATCH", "/_sandbox/seller/sobjects/{sobject}/{id}")
        @guarded
        def seller_update(request: Request) -> Response:
            self.update(request.params["sobject"], request.params["id"], body(request))
            return Response(204)

        @router.route("DELETE", "/_sandbox/seller/sobjects/{sobject}/{id}")
        @guarded
        def seller_delete(request: Request) -> Response:
            self.delete(request.params["sobject"], request.params["id"])
            return Response(204)

        @router.route("GET", "/_sandbox/outbound")
        def outbound_state(_: Request) -> Response:
            return Response(200, self.outbox.state())

        @router.route("POST", "/_sandbox/outbound")
        def outbound_endpoint(request: Request) -> Response:
            endpoint = body(request).get("endpoint")
            if endpoint is not None and not (isinstance(endpoint, str) and endpoint.startswith(("https://", "http://"))):
                raise HttpError(400, {"error": "endpoint must be an http(s) URL or null"})
            self.outbox.endpoint = endpoint
            return Response(200, self.outbox.state())

        @router.route("POST", "/_sandbox/outbound/faults")
        def outbound_fault(request: Request) -> Response:
            data = body(request)
            try:
                self.outbox.add_fault(str(data.get("kind")), count=data.get("count", 1),
                                      delay=float(count(data, "delay", 0.0)))
            except (TypeError, ValueError) as exc:
                raise HttpError(400, {"error": str(exc)}) from None
            return Response(200, self.outbox.state())

        @router.route("DELETE", "/_sandbox/outbound/faults")
        def outbound_faults_clear(_: Request) -> Response:
            self.outbox.clear_faults()
            return Response(200, self.outbox.state())

        @router.route("GET", "/_sandbox/records/{sobject}")
        @guarded
        def records(request: Request) -> Response:
            obj = self._object(request.params["sobject"])
            return Response(200, [{name: format_value(d, r.get(name)) for name, d in obj.fields.items()}
                                  for r in org.rows(obj.name, include_deleted=True)])


def _id(raw: str) -> str:
    normalized = normalize_id(raw)
    if normalized is None:
        raise RequestError(400, "MALFORMED_ID", f"malformed id {raw}")
    return normalized


def _jwt_material(ca: SandboxCA, directory: Path) -> tuple[bytes, bytes]:
    """The client app's JWT certificate and key, kept next to the CA so restarts keep the same pair."""
    cert_path, key_path = directory / "salesforce-jwt.pem", directory / "salesforce-jwt.key"
    if cert_path.exists() and key_path.exists():
        return cert_path.read_bytes(), key_path.read_bytes()
    issued = ca.issue("cosell-connector-jwt", organization="Co-sell Connector")
    key_path.write_bytes(issued.key_pem)
    key_path.chmod(0o600)
    cert_path.write_bytes(issued.cert_pem)
    return issued.cert_pem, issued.key_pem


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.salesforce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    parser.add_argument("--ca", required=True, type=Path, help="folder of the sandbox CA (created if missing)")
    parser.add_argument("--metadata", type=Path, default=DEFAULT_METADATA_DIR, help="a force-app folder")
    parser.add_argument("--multi-currency", action="store_true", help="a multi-currency org")
    parser.add_argument("--currencies", default=",".join(DEFAULT_CURRENCIES),
                        help="active currencies, corporate first (comma-separated)")
    parser.add_argument("--api-limit", type=int, default=100_000, help="daily API request limit")
    parser.add_argument("--batch-size", type=int, default=2000, help="default query batch size")
    parser.add_argument("--outbound-url", default=None,
                        help="where the Flows' outbound messages go (the app's /api/salesforce/outbound?code=...)")
    args = parser.parse_args(argv)
    ca = SandboxCA.load_or_create(args.ca)
    cert, key = _jwt_material(ca, args.ca)
    sim = SalesforceSim(ca, port=args.port, metadata_dir=args.metadata, multi_currency=args.multi_currency,
                        currencies=[c.strip() for c in args.currencies.split(",") if c.strip()],
                        api_limit=args.api_limit, batch_size=args.batch_size, jwt_certificate_pem=cert,
                        jwt_private_key_pem=key, outbound_endpoint=args.outbound_url,
                        outbound_verify=str(ca.ca_pem_path))
    credentials_path = args.ca / "salesforce-sim.json"
    info = asdict(sim.credentials)
    info["private_key_pem"] = str(args.ca / "salesforce-jwt.key")
    info["certificate_pem"] = str(args.ca / "salesforce-jwt.pem")
    credentials_path.write_text(json.dumps(info, indent=2))
    credentials_path.chmod(0o600)
    print(f"Salesforce simulator on {sim.url} (login URL and sandbox credentials in {credentials_path})",
          flush=True)
    sim.server.serve_forever()


__all__ = ["Credentials", "SalesforceSim", "main"]

if __name__ == "__main__":
    main()
