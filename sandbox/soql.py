"""A real parser and evaluator for the subset of SOQL the connector uses.

Why a parser rather than pattern matching: the connector's polling query (`WHERE (SystemModstamp > t OR
(SystemModstamp = t AND Id > x)) ORDER BY SystemModstamp, Id`) is only correct if the simulator evaluates it
exactly as Salesforce does: precedence, null handling, case-insensitive text, typed literals. Anything
outside the subset is a 400 `MALFORMED_QUERY`, never a silently wrong answer.

Subset: `SELECT` fields (relationship paths like `Account.Name`, one level of parent-to-child subquery
`(SELECT ... FROM Microsoft_Solutions__r ...)`, or `COUNT()` alone) `FROM` object `[WHERE cond]`
`[ORDER BY path [ASC|DESC] [NULLS FIRST|LAST], ...]` `[LIMIT n]` `[OFFSET n]`. Conditions: `AND`, `OR`, `NOT`,
parentheses (mixing AND and OR without parentheses is refused, as in Salesforce), `= != <> < <= > >=`,
`[NOT] IN (...)`, `LIKE` with `%`/`_`, literals: quoted strings with backslash escapes, numbers, `TRUE`,
`FALSE`, `NULL`, dates `2026-01-31` and datetimes `2026-01-31T10:00:00Z` / `...+01:00` / `....000Z`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sandbox.sf_model import NUMBER_TYPES, TEXT_TYPES, Access, FieldDef, FieldType, ObjectDef, Schema
from sandbox.sf_values import format_value, normalize_id, parse_date, parse_datetime


class SoqlError(Exception):
    """A query Salesforce would refuse: `code` is its errorCode (MALFORMED_QUERY, INVALID_FIELD, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------------------------------------------------
# Tokens

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<string>'(?:[^'\\]|\\.)*')
      | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:\d{2}))
      | (?P<date>\d{4}-\d{2}-\d{2}(?![\dT]))
      | (?P<number>[+-]?\d+(?:\.\d+)?(?![\w.]))
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
      | (?P<op>!=|<>|<=|>=|=|<|>)
      | (?P<punct>[(),])""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "N": "\n", "t": "\t", "T": "\t", "r": "\r", "R": "\r", "b": "\b", "B": "\b", "f": "\f",
            "F": "\f", '"': '"', "'": "'", "\\": "\\"}
_UNSUPPORTED = {"GROUP", "HAVING", "WITH", "FOR", "USING", "TYPEOF", "INCLUDES", "EXCLUDES", "UPDATE", "VIEW",
                "REFERENCE", "TRACKING", "ROLLUP", "CUBE", "FORMAT", "CONVERTCURRENCY", "TOLABEL"}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    column: int

    @property
    def upper(self) -> str:
        return self.text.upper()


def _tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            if text[pos] == "'":
                raise _malformed(pos, "unterminated string literal")
            raise _malformed(pos, f"unexpected token: '{text[pos]}'")
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group(kind), pos + 1))
        pos = match.end()
    return tokens


def _malformed(column: int, message: str) -> SoqlError:
    return SoqlError("MALFORMED_QUERY", f"ERROR at Row:1:Column:{column}\n{message}")


def _unescape(body: str, column: int, *, like: bool) -> str:
    """Resolve backslash escapes; for LIKE, keep `\\%` and `\\_` escaped for the pattern compiler."""
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
        elif nxt in "%_":
            out.append("\\" + nxt if like else nxt)
        else:
            raise _malformed(column, f"Invalid string literal '{body}'. Illegal character sequence '\\{nxt}' "
                                     "in string literal.")
        i += 2
    return "".join(out)


# ---------------------------------------------------------------------------------------------------------
# Syntax tree


@dataclass(frozen=True)
class Literal:
    kind: str  # string, number, date, datetime, boolean, null
    value: Any
    raw: str
    column: int


@dataclass(frozen=True)
class Path:
    parts: tuple[str, ...]
    column: int

    @property
    def text(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class Compare:
    path: Path
    op: str
    value: Literal


@dataclass(frozen=True)
class InList:
    path: Path
    values: tuple[Literal, ...]
    negate: bool


@dataclass(frozen=True)
class Like:
    path: Path
    pattern: Literal


@dataclass(frozen=True)
class BoolOp:
    op: str  # AND, OR
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Not:
    item: Any


@dataclass(frozen=True)
class OrderItem:
    path: Path
    descending: bool
    nulls_last: bool


@dataclass
class Query:
    """A parsed query; `source` is an object name (top level) or a child relationship name (subquery)."""

    fields: list[Path | Query]
    source: str
    where: Any = None
    order: list[OrderItem] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None
    count: bool = False


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    # -- token helpers
    def peek(self, ahead: int = 0) -> Token | None:
        index = self.pos + ahead
        return self.tokens[index] if index < len(self.tokens) else None

    def at(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token.kind in ("name", "op", "punct") and token.upper in words

    def error(self, token: Token | None = None) -> SoqlError:
        token = token or self.peek()
        if token is None:
            return _malformed(len(self.text) + 1, "unexpected token: <EOF>")
        if token.upper in _UNSUPPORTED:
            return _malformed(token.column, f"unexpected token: '{token.text}' (the simulator supports SELECT, "
                                            "FROM, WHERE, ORDER BY, LIMIT and OFFSET only)")
        return _malformed(token.column, f"unexpected token: '{token.text}'")

    def expect(self, word: str) -> Token:
        token = self.peek()
        if token is None or token.upper != word:
            raise self.error(token)
        self.pos += 1
        return token

    def name(self) -> Token:
        token = self.peek()
        if token is None or token.kind != "name" or token.upper in _KEYWORDS:
            raise self.error(token)
        self.pos += 1
        return token

    # -- grammar
    def query(self, *, nested: bool) -> Query:
        self.expect("SELECT")
        fields: list[Path | Query] = []
        count = False
        if self.at("COUNT") and self.peek(1) is not None and self.peek(1).text == "(":  # type: ignore[union-attr]
            self.pos += 1
            self.expect("(")
            self.expect(")")
            count = True
        else:
            while True:
                if self.at("("):
                    if nested:
                        raise self.error()
                    self.pos += 1
                    fields.append(self.query(nested=True))
                    self.expect(")")
                else:
                    token = self.name()
                    fields.append(Path(tuple(token.text.split(".")), token.column))
                if not self.at(","):
                    break
                self.pos += 1
        self.expect("FROM")
        source = self.name()
        if "." in source.text:
            raise self.error(source)
        query = Query(fields=fields, source=source.text, count=count)
        if self.at("WHERE"):
            self.pos += 1
            query.where = self.condition()
        if self.at("ORDER"):
            self.pos += 1
            self.expect("BY")
            query.order = self.order_list()
        if self.at("LIMIT"):
            self.pos += 1
            query.limit = self.integer()
        if self.at("OFFSET"):
            self.pos += 1
            query.offset = self.integer()
        if not nested and self.peek() is not None:
            raise self.error()
        return query

    def integer(self) -> int:
        token = self.peek()
        if token is None or token.kind != "number" or not token.text.isdigit():
            raise self.error(token)
        self.pos += 1
        return int(token.text)

    def order_list(self) -> list[OrderItem]:
        items = []
        while True:
            token = self.name()
            descending = False
            if self.at("ASC", "DESC"):
                descending = self.peek().upper == "DESC"  # type: ignore[union-attr]
                self.pos += 1
            nulls_last = descending
            if self.at("NULLS"):
                self.pos += 1
                if not self.at("FIRST", "LAST"):
                    raise self.error()
                nulls_last = self.peek().upper == "LAST"  # type: ignore[union-attr]
                self.pos += 1
            items.append(OrderItem(Path(tuple(token.text.split(".")), token.column), descending, nulls_last))
            if not self.at(","):
                return items
            self.pos += 1

    def condition(self) -> Any:
        items = [self.unary()]
        op: str | None = None
        while self.at("AND", "OR"):
            token = self.tokens[self.pos]
            if op is not None and token.upper != op:
                raise _malformed(token.column, f"unexpected token: '{token.text}' (use parentheses to mix AND and OR)")
            op = token.upper
            self.pos += 1
            items.append(self.unary())
        return items[0] if op is None else BoolOp(op, tuple(items))

    def unary(self) -> Any:
        if self.at("NOT"):
            self.pos += 1
            return Not(self.unary())
        if self.at("("):
            self.pos += 1
            inner = self.condition()
            self.expect(")")
            return inner
        return self.comparison()

    def comparison(self) -> Any:
        token = self.name()
        path = Path(tuple(token.text.split(".")), token.column)
        nxt = self.peek()
        if nxt is None:
            raise self.error()
        if nxt.kind == "op":
            self.pos += 1
            return Compare(path, "!=" if nxt.text == "<>" else nxt.text, self.literal())
        if nxt.upper == "LIKE":
            self.pos += 1
            pattern = self.literal(like=True)
            if pattern.kind != "string":
                raise _malformed(pattern.column, "LIKE needs a quoted string")
            return Like(path, pattern)
        negate = False
        if nxt.upper == "NOT":
            negate = True
            self.pos += 1
        if self.at("IN"):
            self.pos += 1
            self.expect("(")
            values = [self.literal()]
            while self.at(","):
                self.pos += 1
                values.append(self.literal())
            self.expect(")")
            return InList(path, tuple(values), negate)
        raise self.error()

    def literal(self, *, like: bool = False) -> Literal:
        token = self.peek()
        if token is None:
            raise self.error()
        self.pos += 1
        if token.kind == "string":
            return Literal("string", _unescape(token.text[1:-1], token.column, like=like), token.text, token.column)
        if token.kind == "number":
            return Literal("number", float(token.text), token.text, token.column)
        if token.kind == "date":
            value = parse_date(token.text)
            if value is None:
                raise _malformed(token.column, f"invalid date: {token.text}")
            return Literal("date", value, token.text, token.column)
        if token.kind == "datetime":
            moment = parse_datetime(token.text, zone_required=True)
            if moment is None:
                raise _malformed(token.column, f"invalid datetime: {token.text}")
            return Literal("datetime", moment, token.text, token.column)
        if token.kind == "name" and token.upper in ("TRUE", "FALSE"):
            return Literal("boolean", token.upper == "TRUE", token.text, token.column)
        if token.kind == "name" and token.upper == "NULL":
            return Literal("null", None, token.text, token.column)
        raise self.error(token)


_KEYWORDS = frozenset({"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "NULL", "TRUE", "FALSE",
                       "ORDER", "BY", "ASC", "DESC", "NULLS", "FIRST", "LAST", "LIMIT", "OFFSET"}) | _UNSUPPORTED


def parse(text: str) -> Query:
    """Parse a SOQL query of the supported subset; SoqlError(MALFORMED_QUERY) otherwise."""
    if not text or not text.strip():
        raise SoqlError("MALFORMED_QUERY", "A query string has to be specified")
    return _Parser(text).query(nested=False)


# ---------------------------------------------------------------------------------------------------------
# Binding to the schema


@dataclass(frozen=True)
class BoundPath:
    """A field path resolved against the schema: the reference fields walked, then the final field."""

    hops: tuple[tuple[FieldDef, ObjectDef], ...]
    field: FieldDef
    text: str


class RecordSource(Protocol):
    """Where the evaluator reads records: the org's committed state."""

    def rows(self, object_name: str, *, include_deleted: bool) -> Iterable[Mapping[str, Any]]: ...

    def get(self, record_id: str) -> Mapping[str, Any] | None: ...


@dataclass
class Plan:
    """A query bound to the schema and one user's access, ready to run against a RecordSource."""

    obj: ObjectDef
    fields: list[BoundPath | tuple[str, Plan]]
    where: Callable[[Mapping[str, Any], RecordSource], bool] | None
    order: list[tuple[BoundPath, bool, bool]]
    limit: int | None
    offset: int | None
    count: bool
    via: str | None = None  # for a subquery: the child's field pointing at the parent


class _Binder:
    def __init__(self, schema: Schema, access: Access) -> None:
        self.schema = schema
        self.access = access

    def object(self, name: str) -> ObjectDef:
        obj = self.schema.object(name)
        if obj is None or not self.access.object(obj).read:
            raise SoqlError("INVALID_TYPE", f"sObject type '{name}' is not supported. If you are attempting to use "
                                            "a custom object, be sure to append the '__c' after the entity name.")
        return obj

    def path(self, obj: ObjectDef, path: Path) -> BoundPath:
        hops: list[tuple[FieldDef, ObjectDef]] = []
        current = obj
        for part in path.parts[:-1]:
            reference = current.relationship(part)
            if reference is None or len(reference.reference_to) != 1 or not self.access.can_read(current, reference):
                raise SoqlError("INVALID_FIELD", f"Didn't understand relationship '{part}' in field path. If you "
                                                 "are attempting to use a custom relationship, be sure to append "
                                                 "the '__r' after the custom relationship name.")
            target = self.object(reference.reference_to[0])
            hops.append((reference, target))
            current = target
        final = current.field(path.parts[-1])
        if final is None or not self.access.can_read(current, final):
            raise SoqlError("INVALID_FIELD", f"No such column '{path.parts[-1]}' on entity '{current.name}'. If you "
                                             "are attempting to use a custom field, be sure to append the '__c' "
                                             "after the custom field name.")
        return BoundPath(tuple(hops), final, path.text)

    def bind(self, query: Query, obj: ObjectDef, via: str | None = None) -> Plan:
        fields: list[BoundPath | tuple[str, Plan]] = []
        seen: set[str] = set()
        for item in query.fields:
            if isinstance(item, Query):
                child = obj.child(item.source)
                if child is None:
                    raise SoqlError("INVALID_TYPE", f"Didn't understand relationship '{item.source}' in FROM part "
                                                    "of query call.")
                child_obj = self.object(child.child_object)
                key = child.name
                plan = self.bind(item, child_obj, via=child.field)
                if key.lower() in seen:
                    raise SoqlError("MALFORMED_QUERY", f"duplicate field selected: {key}")
                seen.add(key.lower())
                fields.append((key, plan))
                continue
            bound = self.path(obj, item)
            canonical = ".".join([h.relationship_name or "" for h, _ in bound.hops] + [bound.field.name]).lower()
            if canonical in seen:
                raise SoqlError("MALFORMED_QUERY", f"duplicate field selected: {item.text}")
            seen.add(canonical)
            fields.append(bound)
        order = []
        for item in query.order:
            bound = self.path(obj, item.path)
            if not bound.field.filterable:
                raise SoqlError("INVALID_FIELD", f"field '{bound.field.name}' can not be sorted in a query call")
            order.append((bound, item.descending, item.nulls_last))
        if query.count and query.order:
            raise SoqlError("MALFORMED_QUERY", "ORDER BY is not allowed with COUNT()")
        if query.offset is not None and query.offset > 2000:
            raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", "Maximum SOQL offset allowed is 2000")
        where = self.condition(obj, query.where) if query.where is not None else None
        return Plan(obj, fields, where, order, query.limit, query.offset, query.count, via)

    # -- conditions compile to closures over (row, source)
    def condition(self, obj: ObjectDef, node: Any) -> Callable[[Mapping[str, Any], RecordSource], bool]:
        if isinstance(node, BoolOp):
            parts = [self.condition(obj, item) for item in node.items]
            if node.op == "AND":
                return lambda row, src: all(p(row, src) for p in parts)
            return lambda row, src: any(p(row, src) for p in parts)
        if isinstance(node, Not):
            inner = self.condition(obj, node.item)
            return lambda row, src: not inner(row, src)
        bound = self.path(obj, node.path)
        if not bound.field.filterable:
            raise SoqlError("INVALID_FIELD", f"field '{bound.field.name}' can not be filtered in a query call")
        read = _reader(bound)
        if isinstance(node, Like):
            if bound.field.type not in TEXT_TYPES or bound.field.type in (FieldType.ID, FieldType.REFERENCE):
                raise SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid operator on {bound.field.name}: LIKE")
            regex = _like_regex(node.pattern.value)
            return lambda row, src: (v := read(row, src)) is not None and regex.match(str(v)) is not None
        if isinstance(node, InList):
            values = [self.literal(bound.field, v) for v in node.values]
            keys = {_key(bound.field, v) for v in values}
            if node.negate:
                return lambda row, src: _key(bound.field, read(row, src)) not in keys
            return lambda row, src: _key(bound.field, read(row, src)) in keys
        value = self.literal(bound.field, node.value)
        return _comparison(bound.field, node.op, value, read, node.value.column)

    def literal(self, definition: FieldDef, literal: Literal) -> Any:
        """Check a literal's type against the field; returns the value in the stored form."""
        if literal.kind == "null":
            return None
        kind = definition.type
        expected = ("string" if kind in TEXT_TYPES else "number" if kind in NUMBER_TYPES
                    else "boolean" if kind == FieldType.BOOLEAN else str(kind))
        if literal.kind != expected:
            quoted = " and should not be enclosed in quotes" if literal.kind == "string" else ""
            raise SoqlError("INVALID_QUERY_FILTER_OPERATOR",
                            f"value of filter criterion for field '{definition.name}' must be of type {expected}"
                            f"{quoted}")
        if kind in (FieldType.ID, FieldType.REFERENCE):
            normalized = normalize_id(literal.value)
            if normalized is None:
                raise SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {literal.value}")
            return normalized
        return literal.value


def _reader(bound: BoundPath) -> Callable[[Mapping[str, Any], RecordSource], Any]:
    """A function reading the path's value from a row, following references through the source."""
    if not bound.hops:
        name = bound.field.name
        return lambda row, _src: row.get(name)

    def read(row: Mapping[str, Any], src: RecordSource) -> Any:
        current: Mapping[str, Any] | None = row
        for reference, _target in bound.hops:
            target_id = current.get(reference.name) if current else None
            current = src.get(target_id) if target_id else None
            if current is None:
                return None
        return current.get(bound.field.name) if current else None

    return read


def _key(definition: FieldDef, value: Any) -> Any:
    """The comparison key: text is case-insensitive except Ids, which are exact."""
    if isinstance(value, str) and definition.type not in (FieldType.ID, FieldType.REFERENCE):
        return value.lower()
    return value


def _comparison(definition: FieldDef, op: str, value: Any, read: Callable[..., Any],
                column: int) -> Callable[[Mapping[str, Any], RecordSource], bool]:
    if op not in ("=", "!="):
        if value is None:
            raise _malformed(column, f"operator '{op}' cannot compare with null")
        if definition.type == FieldType.BOOLEAN:
            raise SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid operator on boolean field: {op}")
    expected = _key(definition, value)

    def equal(row: Mapping[str, Any], src: RecordSource) -> bool:
        return _key(definition, read(row, src)) == expected

    checks: dict[str, Callable[[Any], bool]] = {
        "<": lambda v: v < expected, "<=": lambda v: v <= expected,
        ">": lambda v: v > expected, ">=": lambda v: v >= expected,
    }
    if op == "=":
        return equal
    if op == "!=":
        return lambda row, src: not equal(row, src)
    check = checks[op]

    def ordered(row: Mapping[str, Any], src: RecordSource) -> bool:
        current = read(row, src)
        return current is not None and check(_key(definition, current))

    return ordered


def _like_regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "%_":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("^" + "".join(out) + "$", re.IGNORECASE | re.DOTALL)


def bind(query: Query, schema: Schema, access: Access) -> Plan:
    """Resolve the query's object, fields and literals for one user; SoqlError when Salesforce would refuse."""
    binder = _Binder(schema, access)
    return binder.bind(query, binder.object(query.source))


# ---------------------------------------------------------------------------------------------------------
# Running


class _SortKey:
    """Orders values with nulls first or last and text case-insensitively, per ORDER BY item."""

    __slots__ = ("value", "descending", "nulls_last")

    def __init__(self, value: Any, descending: bool, nulls_last: bool) -> None:
        self.value = value
        self.descending = descending
        self.nulls_last = nulls_last

    def __lt__(self, other: _SortKey) -> bool:
        a, b = self.value, other.value
        if a is None or b is None:
            if a is None and b is None:
                return False
            return (b is None) if self.nulls_last else (a is None)
        if a == b:
            return False
        return (a > b) if self.descending else (a < b)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _SortKey) and self.value == other.value


@dataclass
class Result:
    """What a query returns before paging: the shaped records, or the count for COUNT()."""

    records: list[dict[str, Any]]
    total: int


def run(plan: Plan, source: RecordSource, *, include_deleted: bool, version: str) -> Result:
    """Evaluate a bound query; records are shaped like the REST API's (attributes, nested parents/children)."""
    rows = [r for r in source.rows(plan.obj.name, include_deleted=include_deleted)
            if plan.where is None or plan.where(r, source)]
    rows = _order_and_slice(plan, rows, source)
    if plan.count:
        return Result([], len(rows))
    children: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for item in plan.fields:
        if isinstance(item, tuple):
            key, sub = item
            grouped: dict[str, list[Mapping[str, Any]]] = {}
            for child in source.rows(sub.obj.name, include_deleted=include_deleted):
                if sub.via and child.get(sub.via) and (sub.where is None or sub.where(child, source)):
                    grouped.setdefault(child[sub.via], []).append(child)
            children[key] = grouped
    records = [_shape(plan, row, source, version, children) for row in rows]
    return Result(records, len(records))


def _order_and_slice(plan: Plan, rows: list[Mapping[str, Any]], source: RecordSource) -> list[Mapping[str, Any]]:
    if plan.order:
        readers = [(_reader(bound), bound.field, desc, nulls_last) for bound, desc, nulls_last in plan.order]
        rows = sorted(rows, key=lambda r: [_SortKey(_key(f, read(r, source)), d, n) for read, f, d, n in readers])
    start = plan.offset or 0
    end = None if plan.limit is None else start + plan.limit
    return rows[start:end]


def _attributes(obj_name: str, record_id: str, version: str) -> dict[str, str]:
    return {"type": obj_name, "url": f"/services/data/{version}/sobjects/{obj_name}/{record_id}"}


def _shape(plan: Plan, row: Mapping[str, Any], source: RecordSource, version: str,
           children: dict[str, dict[str, list[Mapping[str, Any]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"attributes": _attributes(plan.obj.name, row["Id"], version)}
    for item in plan.fields:
        if isinstance(item, tuple):
            key, sub = item
            matched = _order_and_slice(sub, children[key].get(row["Id"], []), source)
            out[key] = None if not matched else {
                "totalSize": len(matched), "done": True,
                "records": [_shape(sub, child, source, version, {}) for child in matched],
            }
            continue
        container, current = out, row
        for reference, target in item.hops:
            key = reference.relationship_name or reference.name
            target_id = current.get(reference.name)
            parent = source.get(target_id) if target_id else None
            if parent is None:
                container.setdefault(key, None)
                break
            if not isinstance(container.get(key), dict):
                container[key] = {"attributes": _attributes(target.name, parent["Id"], version)}
            container, current = container[key], parent
        else:
            container[item.field.name] = format_value(item.field, current.get(item.field.name))
    return out


__all__ = ["Plan", "Query", "RecordSource", "Result", "SoqlError", "bind", "parse", "run"]
