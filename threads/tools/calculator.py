"""`calculator`: arithmetic on numbers, read as a Python expression tree and never evaluated as code."""

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from streaming.tools import ToolContext

from .base import ProductTool, ToolInputError, text_input

OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
# Bounds that keep one call cheap: `9 ** 9 ** 9` would take the worker's memory and minutes.
MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 1000
MAX_RESULT_BITS = 4096


class Calculator(ProductTool):
    name = "calculator"
    description = "Evaluate an arithmetic expression: numbers, + - * / // % ** and parentheses."
    input_schema = {
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "for example (2 + 3) * 4 / 5"}},
        "required": ["expression"],
    }

    async def run(self, input: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        expression = text_input(input, "expression", max_chars=MAX_EXPRESSION_CHARS)
        try:
            tree = ast.parse(expression, mode="eval")
        except SyntaxError as error:
            raise ToolInputError(f"Not an arithmetic expression: {error.msg}.") from error
        try:
            value = evaluate(tree.body)
        except ZeroDivisionError as error:
            raise ToolInputError("Division by zero.") from error
        return {"expression": expression, "value": value}


def evaluate(node: ast.expr) -> int | float:
    """Return the value of an arithmetic expression tree; anything but numbers and operators is refused."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in OPERATORS:
        return _bounded(OPERATORS[type(node.op)](evaluate(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        left, right = evaluate(node.left), evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolInputError(f"Exponents are limited to {MAX_EXPONENT}.")
        return _bounded(OPERATORS[type(node.op)](left, right))
    raise ToolInputError(f"Only numbers and arithmetic operators are allowed, not {type(node).__name__}.")


def _bounded(value: int | float | complex) -> int | float:
    if isinstance(value, complex):
        raise ToolInputError("The result is not a real number.")
    if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
        raise ToolInputError("The result is too large.")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolInputError("The result is too large.")
    return value


calculator = Calculator()
