"""The REST API subset the connector uses, on top of the simulated org.

Each public call (`/services/data/vXX.X/...`) is authenticated by its bearer token, counted against the
org's daily limit (a composite or Collections call counts once, as in Salesforce), answered with
`Sforce-Limit-Info: api-usage=used/limit`, and refused with 403 `REQUEST_LIMIT_EXCEEDED` once the limit is
used up. Handlers take `(request, call)`; composite subrequests reuse them without a second charge.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sandbox.httpsim import Request, Response, Router
from sandbox.sf_auth import Authenticator, TokenError
from sandbox.sf_org import TYPE_KEY, Org, Record, RecordError, RequestError, SimUser
from sandbox.sf_model import Access, FieldDef, ObjectDef
from sandbox.sf_values import format_value, make_id, normalize_id
from sandbox.soql import SoqlError, bind, parse, run

MIN_VERSION, MAX_VERSION = 31, 66
COLLECTION_LIMIT = 200
COMPOSITE_LIMIT = 25
COMPOSITE_HEAVY_LIMIT = 5
"""Of the 25, at most 5 queries or sObject Collections subrequests (Salesforce's composite limits)."""
_HEAVY_PATH = re.compile(r"^/services/data/v[0-9.]+/(query|queryAll|composite/sobjects)(/|\?|$)")
CURSOR_IDLE = dt.timedelta(minutes=15)
_VERSION = re.compile(r"^v(\d+)\.0$")
_REFERENCE = re.compile(r"@\{([A-Za-z][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_]+|\[\d+\])*)\}")


@dataclass
class Call:
    """Who is calling and through which API version."""

    user: SimUser
    access: Access
    version: str

    @property
    def base(self) -> str:
        return f"/services/data/{self.version}"


@dataclass
class _Cursor:
    """An open query locator: all result rows, handed out a batch at a time."""

    records: list[dict[str, Any]]
    batch: int
    touched: dt.datetime
    total: int


Handler = Callable[[Request, Call], Response]


@dataclass
class _Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler
    composite_ok: bool = True


def _errors(status: int, code: str, message: str, fields: list[str] | None = None) -> Response:
    return Response(status, RequestError(status, code, message, fields).body())


def _json_body(request: Request) -> Any:
    try:
        return json.loads(request.body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, "JSON_PARSER_ERROR", f"Unexpected character: {exc}") from None


class RestApi:
    """Registers the REST routes on a Router and answers them from `org`.

    Args:
        org: the simulated org.
        auth: checks bearer tokens.
        batch_size: the default query batch size (`Sforce-Query-Options: batchSize=` overrides it within
            Salesforce's 200..2000); smaller values let tests page through small data sets.
    """

    def __init__(self, org: Org, auth: Authenticator, *, batch_size: int = 2000) -> None:
        self.org = org
        self.auth = auth
        self.batch_size = batch_size
        self._routes: list[_Route] = []
        self._cursors: dict[str, _Cursor] = {}
        self._cursor_ids = itertools.count(1)
        self._define_routes()

    # -- wiring

    def register(self, router: Router) -> None:
        for route in self._routes:
            # Salesforce ignores a trailing slash (simple-salesforce creates through `sobjects/Account/`).
            for template in (route.template, route.template + "/"):
                router.route(route.method, template)(self._public(route.handler))

    def _route(self, method: str, template: str, *, composite_ok: bool = True) -> Callable[[Handler], Handler]:
        template = "/services/data/{version}" + template
        pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "/?$")

        def register(handler: Handler) -> Handler:
            self._routes.append(_Route(method, template, pattern, handler, composite_ok))
            return handler

        return register

    def _public(self, handler: Handler) -> Callable[[Request], Response]:
        def answer(request: Request) -> Response:
            with self.org.lock:
                self.org.commit_due()
                try:
                    response = self._authorised(request, handler)
                except (RequestError, RecordError) as exc:
                    error = exc if isinstance(exc, RequestError) else exc.as_request_error()
                    response = Response(error.status, error.body())
                except SoqlError as exc:
                    response = _errors(400, exc.code, exc.message)
                except Exception as exc:  # noqa: BLE001 - a simulator bug must still answer like Salesforce
                    response = _errors(500, "UNKNOWN_EXCEPTION", f"An unexpected error occurred: {exc!r}")
                response.headers["Sforce-Limit-Info"] = self.org.api.header()
                return response

        return answer

    def _authorised(self, request: Request, handler: Handler) -> Response:
        version = request.params.get("version", "")
        match = _VERSION.match(version)
        if not match or not MIN_VERSION <= int(match.group(1)) <= MAX_VERSION:
            raise RequestError(404, "NOT_FOUND", "The requested resource does not exist")
        user = self.auth.user_for(request.header("authorization"))
        self._charge()
        return handler(request, Call(user, self.org.access(user), version))

    def _charge(self) -> None:
        api = self.org.api
        now = self.org.clock()
        if now - api.window_start >= api.window:
            api.used, api.window_start = 0, now
        if api.concurrent_refusals > 0:  # Salesforce's answer to a 26th concurrent long-running request
            api.concurrent_refusals -= 1
            raise RequestError(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentRequests (Concurrent API Requests) Limit exceeded.")
        if api.used >= api.limit:
            raise RequestError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        api.used += 1

    # -- helpers

    def _object(self, call: Call, name: str) -> ObjectDef:
        obj = self.org.schema.object(name)
        if obj is None or not call.access.object(obj).read:
            raise RequestError(404, "NOT_FOUND", "The requested resource does not exist")
        return obj

    def _record_json(self, call: Call, obj: ObjectDef, record: Record, fields: list[str] | None = None) -> dict:
        out: dict[str, Any] = {"attributes": {"type": obj.name,
                                              "url": f"{call.base}/sobjects/{obj.name}/{record['Id']}"}}
        definitions: list[FieldDef]
        if fields:
            definitions = []
            for name in fields:
                definition = obj.field(name)
                if definition is None or not call.access.can_read(obj, definition):
                    raise RequestError(400, "INVALID_FIELD", f"No such column '{name}' on entity '{obj.name}'")
                definitions.append(definition)
        else:
            definitions = [f for f in obj.fields.values() if call.access.can_read(obj, f)]
        for definition in definitions:
            out[definition.name] = format_value(definition, record.get(definition.name))
        return out

    def _existing(self, obj: ObjectDef, raw_id: str) -> Record:
        record_id = normalize_id(raw_id)
        record = self.org.find(record_id) if record_id else None
        if record is None or record[TYPE_KEY] != obj.name:
            raise RequestError(404, "NOT_FOUND", "The requested resource does not exist")
        if record["IsDeleted"]:
            raise RequestError(404, "ENTITY_IS_DELETED", "entity is deleted")
        return record

    def _key_field(self, call: Call, obj: ObjectDef, name: str) -> FieldDef:
        definition = obj.field(name)
        if definition is None or not definition.id_lookup or not call.access.can_read(obj, definition):
            raise RequestError(404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: "
                                                 f"{name}")
        return definition

    @staticmethod
    def _body_object(request: Request) -> dict[str, Any]:
        body = _json_body(request)
        if not isinstance(body, dict):
            raise RequestError(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of SObject from START_ARRAY")
        return body

    # -- the routes

    def _define_routes(self) -> None:  # noqa: C901 - one place that lists every route
        route = self._route

        @route("GET", "")
        def resources(_: Request, call: Call) -> Response:
            names = ["sobjects", "query", "queryAll", "composite", "limits"]
            return Response(200, {name: f"{call.base}/{name}" for name in names})

        @route("GET", "/limits")
        def limits(_: Request, call: Call) -> Response:
            # Salesforce: "available ... for API users with the View Setup and Configuration permission"
            if not call.access.views_setup:
                return _errors(403, "INSUFFICIENT_ACCESS", "You don't have permission to view the org's limits.")
            api = self.org.api
            return Response(200, {"DailyApiRequests": {"Max": api.limit, "Remaining": max(0, api.limit - api.used)}})

        @route("GET", "/sobjects")
        def describe_global(_: Request, call: Call) -> Response:
            entries = [call.access.describe_global_entry(o, call.base) for o in self.org.schema.objects.values()
                       if call.access.object(o).read]
            return Response(200, {"encoding": "UTF-8", "maxBatchSize": COLLECTION_LIMIT, "sobjects": entries})

        @route("GET", "/sobjects/{sobject}")
        def basic_info(request: Request, call: Call) -> Response:
            obj = self._object(call, request.params["sobject"])
            return Response(200, {"objectDescribe": call.access.describe_global_entry(obj, call.base),
                                  "recentItems": []})

        @route("GET", "/sobjects/{sobject}/describe")
        def describe(request: Request, call: Call) -> Response:
            obj = self._object(call, request.params["sobject"])
            return Response(200, call.access.describe(obj, call.base))

        @route("POST", "/sobjects/{sobject}")
        def create(request: Request, call: Call) -> Response:
            obj = self._object(call, request.params["sobject"])
            values = self.org.parse_fields(obj, self._body_object(request), call.access)
            record_id = self.org.insert(obj, values, call.user)
            return Response(201, {"id": record_id, "success": True, "errors": []},
                            {"Location": f"{call.base}/sobjects/{obj.name}/{record_id}"})

        @route("GET", "/sobjects/{sobject}/{id}")
        def retrieve(request: Request, call: Call) -> Response:
            obj = self._object(call, request.params["sobject"])
            record = self._existing(obj, request.params["id"])
            fields = [f for f in (request.arg("fields") or "").split(",") if f.strip()]
            return Response(200, self._record_json(call, obj, record, [f.strip() for f in fields]))

        @route("PATCH", "/sobjects/{sobject}/{id}")
        def update(request: Request, call: Call) -> Response:
            obj = self._object(call, request.params["sobject"])
            record = self._existing(obj, request.params["id"])
            values = self.org.parse_fields(obj, self._body_object(request), call.access)
            self.org.update(obj, record["Id"], values, call.user)
            return Response(204)

        @route("DELETE", "/sobjects/{sobject}/{id}")
        def delete(request: Request, call: Call) -> Response:
            obj = self._object(call, request.params["sobject"])
            record = self._existing(obj, request.params["id"])
            self.org.delete(obj, record["Id"], call.user)
            return Response(204)

        @route("GET", "/sobjects/{sobject}/{field}/{value}")
        def retrieve_by_key(request: Request, call: Call) -> Response:
            obj = self._object(call, request.params["sobject"])
            key_field = self._key_field(call, obj, request.params["field"])
            value = unquote(request.params["value"])
            matches = [r for r in self.org.rows(obj.name, include_deleted=False)
                       if _same_key(key_field, r.get(key_field.name), value)]
            if not matches:
                raise RequestError(404, "NOT_FOUND", "The requested resource does not exist")
            if len(matches) > 1:
                return Response(300, [f"{call.base}/sobjects/{obj.name}/{r['Id']}" for r in matches])
            return Response(200, self._record_json(call, obj, matches[0]))

        @route("PATCH", "/sobjects/{sobject}/{field}/{value}")
        def upsert(request: Request, call: Call) -> Response:
            obj = self._object(call, request.params["sobject"])
            key_field = self._key_field(call, obj, request.params["field"])
            values = self.org.parse_fields(obj, self._body_object(request), call.access)
            key = unquote(request.params["value"])
            record_id, created = self.org.upsert(obj, key_field, key, values, call.user)
            return Response(201 if created else 200,
                            {"id": record_id, "success": True, "errors": [], "created": created},
                            {"Location": f"{call.base}/sobjects/{obj.name}/{record_id}"})

        @route("GET", "/query")
        def query(request: Request, call: Call) -> Response:
            return self._query(request, call, include_deleted=False)

        @route("GET", "/queryAll")
        def query_all(request: Request, call: Call) -> Response:
            return self._query(request, call, include_deleted=True)

        @route("GET", "/query/{locator}")
        def query_more(request: Request, call: Call) -> Response:
            return self._more(request.params["locator"], call)

        @route("GET", "/queryAll/{locator}")
        def query_all_more(request: Request, call: Call) -> Response:
            return self._more(request.params["locator"], call)

        @route("POST", "/composite/sobjects")
        def collection_create(request: Request, call: Call) -> Response:
            return Response(200, self._collection(request, call, "create"))

        @route("PATCH", "/composite/sobjects")
        def collection_update(request: Request, call: Call) -> Response:
            return Response(200, self._collection(request, call, "update"))

        @route("PATCH", "/composite/sobjects/{sobject}/{field}")
        def collection_upsert(request: Request, call: Call) -> Response:
            return Response(200, self._collection(request, call, "upsert"))

        @route("DELETE", "/composite/sobjects")
        def collection_delete(request: Request, call: Call) -> Response:
            return Response(200, self._collection_delete(request, call))

        @route("GET", "/composite/sobjects/{sobject}")
        def collection_retrieve(request: Request, call: Call) -> Response:
            obj = self._object(call, request.params["sobject"])
            ids = [i for i in (request.arg("ids") or "").split(",") if i]
            fields = [f for f in (request.arg("fields") or "").split(",") if f]
            if not ids or not fields:
                raise RequestError(400, "MISSING_ARGUMENT", "ids and fields are required")
            if len(ids) > 2000:
                raise RequestError(400, "EXCEEDED_ID_LIMIT", "cannot retrieve more than 2000 records")
            out: list[Any] = []
            for raw_id in ids:
                record_id = normalize_id(raw_id)
                record = self.org.get(record_id) if record_id else None
                ok = record is not None and record[TYPE_KEY] == obj.name
                out.append(self._record_json(call, obj, record, fields) if ok else None)  # type: ignore[arg-type]
            return Response(200, out)

        @route("POST", "/composite", composite_ok=False)
        def composite(request: Request, call: Call) -> Response:
            return Response(200, self._composite(request, call))

    # -- queries

    def _query(self, request: Request, call: Call, *, include_deleted: bool) -> Response:
        text = request.arg("q")
        if text is None:
            raise RequestError(400, "MALFORMED_QUERY", "A query string has to be specified")
        plan = bind(parse(text), self.org.schema, call.access)
        result = run(plan, self.org, include_deleted=include_deleted, version=call.version)
        batch = self.batch_size
        options = request.header("sforce-query-options") or ""
        match = re.search(r"batchSize=(\d+)", options)
        if match:
            batch = min(2000, max(200, int(match.group(1))))
        if plan.count:
            return Response(200, {"totalSize": result.total, "done": True, "records": []})
        now = self.org.clock()
        for locator in [k for k, c in self._cursors.items() if now - c.touched > CURSOR_IDLE]:
            del self._cursors[locator]  # abandoned cursors expire, as Salesforce's do
        cursor = _Cursor(result.records, batch, now, result.total)
        return Response(200, self._page(call, cursor, make_id("01g", next(self._cursor_ids)), 0))

    def _page(self, call: Call, cursor: _Cursor, locator: str, start: int) -> dict[str, Any]:
        end = start + cursor.batch
        page: dict[str, Any] = {"totalSize": cursor.total, "done": end >= len(cursor.records),
                                "records": cursor.records[start:end]}
        if end < len(cursor.records):
            self._cursors[locator] = cursor
            page["nextRecordsUrl"] = f"{call.base}/query/{locator}-{end}"
        else:
            self._cursors.pop(locator, None)
        return page

    def _more(self, raw: str, call: Call) -> Response:
        locator, _, start = raw.partition("-")
        cursor = self._cursors.get(locator)
        now = self.org.clock()
        if cursor is None or not start.isdigit() or now - cursor.touched > CURSOR_IDLE:
            self._cursors.pop(locator, None)
            raise RequestError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        cursor.touched = now
        return Response(200, self._page(call, cursor, locator, int(start)))

    # -- Collections

    def _collection(self, request: Request, call: Call, mode: str) -> list[dict[str, Any]]:
        body = self._body_object(request)
        records = body.get("records")
        if not isinstance(records, list) or not records:
            raise RequestError(400, "INVALID_FIELD", "No records were provided", ["records"])
        if len(records) > COLLECTION_LIMIT:
            raise RequestError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 "
                                                         "records into this call")
        all_or_none = bool(body.get("allOrNone", False))
        key_field: FieldDef | None = None
        upsert_obj: ObjectDef | None = None
        if mode == "upsert":
            upsert_obj = self._object(call, request.params["sobject"])
            key_field = self._key_field(call, upsert_obj, request.params["field"])
        # Parse everything first: an ill-typed value or unknown field fails the whole request.
        parsed: list[tuple[ObjectDef, dict[str, Any], Any]] = []
        for raw in records:
            if not isinstance(raw, dict):
                raise RequestError(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of SObject")
            type_name = (raw.get("attributes") or {}).get("type")
            if not type_name:
                raise RequestError(400, "INVALID_TYPE", "Must send a concrete entity type.")
            obj = self._object(call, type_name)
            if upsert_obj is not None and obj is not upsert_obj:
                raise RequestError(400, "INVALID_TYPE", f"all records must be of type {upsert_obj.name}")
            values = self.org.parse_fields(obj, raw, call.access)
            # Field names are case-insensitive, "id" included: Salesforce's own Collections examples write "id".
            parsed.append((obj, values, next((v for k, v in raw.items() if k.lower() == "id"), None)))
        duplicates: set[Any] = set()
        if key_field is not None:
            seen: dict[Any, int] = {}
            for _, values, _ in parsed:
                key = _fold(key_field, values.get(key_field.name))
                seen[key] = seen.get(key, 0) + 1
            duplicates = {k for k, n in seen.items() if n > 1 and k is not None}
        results: list[dict[str, Any]] = []
        with self.org.transaction():
            mark = self.org.savepoint()
            for obj, values, raw_id in parsed:
                try:
                    results.append(self._collection_one(call, mode, obj, values, raw_id, key_field, duplicates))
                except RecordError as exc:
                    results.append({"id": None, "success": False, "errors": [exc.result_error()]})
            if all_or_none and not all(r["success"] for r in results):
                self.org.rollback(mark)
                results = [r if not r["success"] else
                           {"id": None, "success": False,
                            "errors": [{"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                                        "message": "Record rolled back because not all records were valid and "
                                                   "the request was using AllOrNone header", "fields": []}]}
                           for r in results]
        return results

    def _collection_one(self, call: Call, mode: str, obj: ObjectDef, values: dict[str, Any], raw_id: Any,
                        key_field: FieldDef | None, duplicates: set[Any]) -> dict[str, Any]:
        if mode == "create":
            return {"id": self.org.insert(obj, values, call.user), "success": True, "errors": []}
        if mode == "update":
            record_id = normalize_id(raw_id)
            if raw_id is None:
                raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
            if record_id is None or self.org.object_of(record_id) is not obj:
                raise RecordError("MALFORMED_ID", f"malformed id {raw_id}", ["Id"])
            try:
                self.org.update(obj, record_id, values, call.user)
            except RecordError as exc:
                if exc.code == "NOT_FOUND":
                    raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["Id"]) from None
                raise
            return {"id": record_id, "success": True, "errors": []}
        assert key_field is not None
        key = values.get(key_field.name)
        if key is None:
            raise RecordError("MISSING_ARGUMENT", f"{key_field.name} not specified", [key_field.name])
        if _fold(key_field, key) in duplicates:
            raise RecordError("DUPLICATE_EXTERNAL_ID", f"Duplicate external id specified: {key}", [key_field.name])
        record_id, created = self.org.upsert(obj, key_field, key, values, call.user)
        return {"id": record_id, "success": True, "errors": [], "created": created}

    def _collection_delete(self, request: Request, call: Call) -> list[dict[str, Any]]:
        ids = [i for i in (request.arg("ids") or "").split(",") if i]
        if not ids:
            raise RequestError(400, "MISSING_ARGUMENT", "ids is required")
        if len(ids) > COLLECTION_LIMIT:
            raise RequestError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 "
                                                         "records into this call")
        all_or_none = (request.arg("allOrNone") or "false").lower() == "true"
        results: list[dict[str, Any]] = []
        with self.org.transaction():
            mark = self.org.savepoint()
            for raw_id in ids:
                record_id = normalize_id(raw_id)
                obj = self.org.object_of(record_id) if record_id else None
                try:
                    if obj is None or record_id is None:
                        raise RecordError("MALFORMED_ID", f"malformed id {raw_id}")
                    if self.org.find(record_id) is None:
                        raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
                    self.org.delete(obj, record_id, call.user)
                    results.append({"id": record_id, "success": True, "errors": []})
                except RecordError as exc:
                    results.append({"id": record_id, "success": False, "errors": [exc.result_error()]})
            if all_or_none and not all(r["success"] for r in results):
                self.org.rollback(mark)
                results = [r if not r["success"] else {**r, "success": False, "errors": [
                    {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "message": "Record rolled back",
                     "fields": []}]} for r in results]
        return results

    # -- composite

    def _composite(self, request: Request, call: Call) -> dict[str, Any]:
        body = self._body_object(request)
        subrequests = body.get("compositeRequest")
        if not isinstance(subrequests, list) or not subrequests:
            raise RequestError(400, "INVALID_INPUT", "compositeRequest is required")
        if len(subrequests) > COMPOSITE_LIMIT:
            raise RequestError(400, "LIMIT_EXCEEDED", f"Limit Exceeded: composite subrequests {len(subrequests)} "
                                                      f"> {COMPOSITE_LIMIT}")
        heavy = sum(1 for s in subrequests if isinstance(s, dict) and _HEAVY_PATH.match(str(s.get("url", ""))))
        if heavy > COMPOSITE_HEAVY_LIMIT:
            raise RequestError(400, "LIMIT_EXCEEDED", f"Limit Exceeded: {heavy} query or sObject Collections "
                                                      f"subrequests > {COMPOSITE_HEAVY_LIMIT}")
        all_or_none = bool(body.get("allOrNone", False))
        ids = [s.get("referenceId") if isinstance(s, dict) else None for s in subrequests]
        if any(not isinstance(i, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", i) for i in ids) \
                or len(set(ids)) != len(ids):
            raise RequestError(400, "INVALID_INPUT", "every subrequest needs a unique referenceId of letters, "
                                                     "digits and underscores, starting with a letter")
        answers: list[dict[str, Any]] = []
        outputs: dict[str, Any] = {}
        failed = False
        with self.org.transaction():
            mark = self.org.savepoint()
            for sub in subrequests:
                if failed and all_or_none:
                    answers.append(self._halted(sub["referenceId"]))
                    continue
                response = self._subrequest(sub, call, outputs)
                body_out = response.body
                answers.append({"body": body_out, "httpHeaders": response.headers,
                                "httpStatusCode": response.status, "referenceId": sub["referenceId"]})
                if response.status < 300:
                    outputs[sub["referenceId"]] = body_out
                else:
                    failed = True
            if failed and all_or_none:
                self.org.rollback(mark)
                answers = [a if a["httpStatusCode"] >= 300 else self._halted(a["referenceId"]) for a in answers]
        return {"compositeResponse": answers}

    @staticmethod
    def _halted(reference_id: str) -> dict[str, Any]:
        return {"body": [{"errorCode": "PROCESSING_HALTED",
                          "message": "The transaction was rolled back since another operation in the same "
                                     "transaction failed."}],
                "httpHeaders": {}, "httpStatusCode": 400, "referenceId": reference_id}

    def _subrequest(self, sub: dict[str, Any], call: Call, outputs: dict[str, Any]) -> Response:
        try:
            url = self._resolve(str(sub.get("url", "")), outputs)
            body = sub.get("body")
            if body is not None:
                body = json.loads(self._resolve(json.dumps(body), outputs, quote_json=True))
            parts = urlsplit(url)
            request = Request(method=str(sub.get("method", "GET")).upper(), path=parts.path,
                              query=parse_qs(parts.query, keep_blank_values=True),
                              headers={k.lower(): v for k, v in (sub.get("httpHeaders") or {}).items()},
                              body=json.dumps(body).encode() if body is not None else b"")
            for route in self._routes:
                match = route.pattern.match(request.path)
                if match and route.method == request.method:
                    if not route.composite_ok:
                        raise RequestError(400, "INVALID_INPUT", "this resource is not supported in composite")
                    if match.group("version") != call.version:
                        raise RequestError(400, "INVALID_INPUT", "subrequests must use the composite's API version")
                    request.params = match.groupdict()
                    savepoint = self.org.savepoint()
                    response = route.handler(request, call)
                    if response.status >= 300:
                        self.org.rollback(savepoint)
                    return response
            raise RequestError(404, "NOT_FOUND", "The requested resource does not exist")
        except (RequestError, RecordError) as exc:
            error = exc if isinstance(exc, RequestError) else exc.as_request_error()
            return Response(error.status, error.body())
        except SoqlError as exc:
            return _errors(400, exc.code, exc.message)

    @staticmethod
    def _resolve(text: str, outputs: dict[str, Any], *, quote_json: bool = False) -> str:
        """Replace `@{ref.path}` with values from earlier subrequests' bodies."""
        def value(match: re.Match[str]) -> str:
            reference, path = match.group(1), match.group(2)
            if reference not in outputs:
                raise RequestError(400, "PROCESSING_HALTED", f"Invalid reference specified. No value for "
                                                             f"{reference}{path} found in {reference}.")
            current: Any = outputs[reference]
            for step in re.findall(r"\.([A-Za-z0-9_]+)|\[(\d+)\]", path):
                name, index = step
                try:
                    current = current[int(index)] if index else current[name]
                except (KeyError, IndexError, TypeError):
                    raise RequestError(400, "PROCESSING_HALTED", f"Invalid reference specified. No value for "
                                                                 f"{reference}{path} found in {reference}.") from None
            text_value = current if isinstance(current, str) else json.dumps(current)
            return json.dumps(text_value)[1:-1] if quote_json else text_value

        return _REFERENCE.sub(value, text)


def _fold(definition: FieldDef, value: Any) -> Any:
    if isinstance(value, str) and not definition.case_sensitive:
        return value.lower()
    return value


def _same_key(definition: FieldDef, stored: Any, wanted: str) -> bool:
    if stored is None:
        return False
    if definition.name == "Id":
        return stored == normalize_id(wanted)
    return _fold(definition, str(stored)) == _fold(definition, wanted)


class TokenEndpoint:
    """`POST /services/oauth2/token` and the identity URL, for one Authenticator."""

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    def register(self, router: Router) -> None:
        @router.route("POST", "/services/oauth2/token")
        def token(request: Request) -> Response:
            with self.auth.org.lock:
                try:
                    return Response(200, self.auth.token(request.body, request.headers, request.base_url))
                except TokenError as exc:
                    return Response(exc.status, exc.body())

        @router.route("GET", "/id/{org_id}/{user_id}")
        def identity(request: Request) -> Response:
            with self.auth.org.lock:
                try:
                    user = self.auth.user_for(request.header("authorization"))
                except RequestError as exc:
                    return Response(exc.status, exc.body())
                if request.params["user_id"] != user.id:
                    return Response(403, [{"errorCode": "FORBIDDEN", "message": "Forbidden"}])
                return Response(200, {"id": f"{request.base_url}/id/{self.auth.org.org_id}/{user.id}",
                                      "user_id": user.id, "organization_id": self.auth.org.org_id,
                                      "username": user.username, "display_name": user.name, "email": user.email,
                                      "active": True})


__all__ = ["Call", "RestApi", "TokenEndpoint"]
