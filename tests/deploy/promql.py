"""The series a PromQL expression reads, from Prometheus' grammar (promql-parser), not a regex."""

from __future__ import annotations

from dataclasses import dataclass

import promql_parser

# Grafana's interval variables, replaced before parsing: they are not PromQL.
GRAFANA_VARIABLES = ("$__rate_interval", "$__interval", "$__range")


@dataclass(frozen=True)
class Selector:
    name: str
    labels: frozenset[str]


def selectors(expression: str) -> list[Selector]:
    for variable in GRAFANA_VARIABLES:
        expression = expression.replace(variable, "1m")
    found: list[Selector] = []
    _walk(promql_parser.parse(expression), found)
    return found


def _walk(node: object, found: list[Selector]) -> None:
    if isinstance(node, promql_parser.MatrixSelector):
        _walk(node.vector_selector, found)
    elif isinstance(node, promql_parser.VectorSelector):
        matchers = [
            m for group in [node.matchers.matchers, *node.matchers.or_matchers] for m in group
        ]
        name = node.name or next(m.value for m in matchers if m.name == "__name__")
        labels = frozenset(m.name for m in matchers if m.name != "__name__")
        found.append(Selector(name=name, labels=labels))
    elif isinstance(node, promql_parser.BinaryExpr):
        _walk(node.lhs, found)
        _walk(node.rhs, found)
    elif isinstance(node, promql_parser.Call):
        for argument in node.args:
            _walk(argument, found)
    elif isinstance(node, promql_parser.AggregateExpr):
        _walk(node.expr, found)
        if node.param is not None:
            _walk(node.param, found)
    elif isinstance(
        node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)
    ):
        _walk(node.expr, found)
    elif not isinstance(node, (promql_parser.NumberLiteral, promql_parser.StringLiteral)):
        raise AssertionError(f"unexpected PromQL node {type(node).__name__}: teach promql.py")
