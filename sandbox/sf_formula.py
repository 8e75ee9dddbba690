"""A small evaluator for the Salesforce formula fields the project's metadata deploys.

Why evaluate formulas at all: the ✔ marker is a formula over fields the connector writes. If the simulator
returned a fixed value, a formula that can never show ✔ (a typo in a field name, a wrong picklist value)
would pass every test. So the simulator parses the formula from the metadata when it builds its schema,
refuses what it does not understand (naming the function or field), and computes the value on every write.

Supported: field references on the same record, string/number/TRUE/FALSE/NULL literals, `=`/`==`, `<>`/`!=`,
`<`, `<=`, `>`, `>=`, `&` (concatenation), `+ - * /`, `&&`, `||`, and the functions IF, AND, OR, NOT,
ISBLANK, ISNULL, ISPICKVAL, TEXT, BLANKVALUE. Cross-object references (`Account.Name`) are not supported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<number>\d+(?:\.\d+)?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>==|<>|!=|<=|>=|&&|\|\||[=<>&+\-*/(),])
    )""",
    re.VERBOSE,
)

FUNCTIONS = ("IF", "AND", "OR", "NOT", "ISBLANK", "ISNULL", "ISPICKVAL", "TEXT", "BLANKVALUE")
_ARITY = {"IF": (3, 3), "NOT": (1, 1), "ISBLANK": (1, 1), "ISNULL": (1, 1), "ISPICKVAL": (2, 2),
          "TEXT": (1, 1), "BLANKVALUE": (2, 2), "AND": (1, 99), "OR": (1, 99)}


class FormulaError(ValueError):
    """The formula uses something this evaluator (or Salesforce) does not accept."""


Node = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Formula:
    """A parsed formula: `evaluate(record)` computes it, `fields` are the fields it reads."""

    source: str
    fields: frozenset[str]
    _root: Node

    def evaluate(self, record: Mapping[str, Any]) -> Any:
        value = self._root(record)
        if isinstance(value, Decimal):
            return float(value)
        return None if value == "" else value


def _blank(value: Any) -> bool:
    return value is None or value == ""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Parser:
    """Recursive descent, with Salesforce's precedence: || < && < comparison < & + - < * /."""

    def __init__(self, source: str, resolve_field: Callable[[str], str]) -> None:
        self.tokens = self._tokenize(source)
        self.pos = 0
        self.resolve_field = resolve_field
        self.fields: set[str] = set()

    @staticmethod
    def _tokenize(source: str) -> list[tuple[str, str]]:
        tokens, pos = [], 0
        while pos < len(source):
            if source[pos:].strip() == "":
                break
            match = _TOKEN.match(source, pos)
            if not match or match.end() == pos:
                raise FormulaError(f"unexpected character at {pos}: {source[pos:pos + 10]!r}")
            kind = match.lastgroup or ""
            tokens.append((kind, match.group(kind)))
            pos = match.end()
        return tokens

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1].upper() != value):
            raise FormulaError(f"expected {value or 'more input'}, found {token[1] if token else 'the end'}")
        self.pos += 1
        return token

    def parse(self) -> Node:
        node = self.binary(0)
        if self.peek() is not None:
            raise FormulaError(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    _LEVELS: tuple[tuple[str, ...], ...] = (("||",), ("&&",), ("=", "==", "<>", "!=", "<", "<=", ">", ">="),
                                            ("&", "+", "-"), ("*", "/"))

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while (token := self.peek()) is not None and token[0] == "op" and token[1] in self._LEVELS[level]:
            self.take()
            right = self.binary(level + 1)
            left = self._combine(token[1], left, right)
        return left

    @staticmethod
    def _combine(op: str, left: Node, right: Node) -> Node:
        def compare(check: Callable[[Any, Any], bool]) -> Node:
            def node(record: Mapping[str, Any]) -> Any:
                a, b = left(record), right(record)
                if _blank(a) or _blank(b):
                    return _blank(a) and _blank(b) and check(0, 0)
                return check(a, b)
            return node

        def arithmetic(fn: Callable[[Decimal, Decimal], Decimal]) -> Node:
            def node(record: Mapping[str, Any]) -> Any:
                a, b = left(record), right(record)
                return None if a is None or b is None else fn(Decimal(str(a)), Decimal(str(b)))
            return node

        table: dict[str, Node] = {
            "||": lambda r: bool(left(r)) or bool(right(r)),
            "&&": lambda r: bool(left(r)) and bool(right(r)),
            "=": compare(lambda a, b: a == b), "==": compare(lambda a, b: a == b),
            "<>": compare(lambda a, b: a != b), "!=": compare(lambda a, b: a != b),
            "<": compare(lambda a, b: a < b), "<=": compare(lambda a, b: a <= b),
            ">": compare(lambda a, b: a > b), ">=": compare(lambda a, b: a >= b),
            "&": lambda r: _text(left(r)) + _text(right(r)),
            "+": arithmetic(lambda a, b: a + b), "-": arithmetic(lambda a, b: a - b),
            "*": arithmetic(lambda a, b: a * b), "/": arithmetic(lambda a, b: a / b),
        }
        return table[op]

    def unary(self) -> Node:
        token = self.take()
        kind, value = token
        if kind == "string":
            text = re.sub(r"\\(.)", r"\1", value[1:-1])
            return lambda _r: text
        if kind == "number":
            number = Decimal(value)
            return lambda _r: number
        if kind == "op" and value == "(":
            node = self.binary(0)
            self.take(")")
            return node
        if kind == "op" and value == "-":
            inner = self.unary()
            return lambda r: None if inner(r) is None else -Decimal(str(inner(r)))
        if kind != "name":
            raise FormulaError(f"unexpected {value!r}")
        upper = value.upper()
        if upper in ("TRUE", "FALSE"):
            flag = upper == "TRUE"
            return lambda _r: flag
        if upper == "NULL":
            return lambda _r: None
        nxt = self.peek()
        if nxt is not None and nxt[1] == "(":
            return self.call(upper)
        field = self.resolve_field(value)
        self.fields.add(field)
        return lambda r: r.get(field)

    def call(self, name: str) -> Node:
        if name not in FUNCTIONS:
            raise FormulaError(f"function {name} is not supported by the simulator (supported: {', '.join(FUNCTIONS)})")
        self.take("(")
        args: list[Node] = []
        if self.peek() is not None and self.peek()[1] != ")":  # type: ignore[index]
            args.append(self.binary(0))
            while self.peek() is not None and self.peek()[1] == ",":  # type: ignore[index]
                self.take(",")
                args.append(self.binary(0))
        self.take(")")
        low, high = _ARITY[name]
        if not low <= len(args) <= high:
            raise FormulaError(f"{name} takes {low}..{high} arguments, got {len(args)}")
        a = args
        functions: dict[str, Node] = {
            "IF": lambda r: a[1](r) if a[0](r) else a[2](r),
            "AND": lambda r: all(bool(x(r)) for x in a),
            "OR": lambda r: any(bool(x(r)) for x in a),
            "NOT": lambda r: not a[0](r),
            "ISBLANK": lambda r: _blank(a[0](r)),
            "ISNULL": lambda r: _blank(a[0](r)),
            "ISPICKVAL": lambda r: _text(a[0](r)) == _text(a[1](r)),
            "TEXT": lambda r: _text(a[0](r)),
            "BLANKVALUE": lambda r: a[1](r) if _blank(a[0](r)) else a[0](r),
        }
        return functions[name]


def parse_formula(source: str, resolve_field: Callable[[str], str]) -> Formula:
    """Parse `source`; `resolve_field` maps a name to the canonical field name or raises FormulaError."""
    parser = _Parser(source, resolve_field)
    root = parser.parse()
    return Formula(source, frozenset(parser.fields), root)


__all__ = ["FUNCTIONS", "Formula", "FormulaError", "parse_formula"]
