"""JSON Schema from the protocol's types (streaming/protocol.py), for the OpenAPI document and the tests.

A TypedDict becomes an object with exactly its keys (`additionalProperties: false`), all
required but the NotRequired ones; str, int, bool and None become their JSON types,
Literal and Enum types an enum of their values, `list[T]` an array, `dict[str, T]` an
object of T, `object` any JSON value (an empty schema), a union `anyOf` (or a `type`
list where the members are plain types), and `Annotated[T, SchemaHint(…)]` adds the
hint's keywords.
"""

import types
from collections.abc import Mapping
from enum import Enum
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    Required,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from streaming.protocol import SchemaHint

PLAIN_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}


def json_schema(annotation: Any, *, refs: Mapping[type, str] | None = None) -> dict[str, Any]:
    """Return the JSON Schema of a type annotation; the types named in `refs` become `$ref`s to that name."""
    refs = refs or {}
    if annotation in refs:
        return {"$ref": f"#/components/schemas/{refs[annotation]}"}
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        hints = [hint for hint in annotation.__metadata__ if isinstance(hint, SchemaHint)]
        schema = json_schema(args[0], refs=refs)
        for hint in hints:
            schema |= {keyword: value for keyword, value in vars(hint).items() if value is not None}
        return schema
    if origin in (NotRequired, Required):
        return json_schema(args[0], refs=refs)
    if origin in (Union, types.UnionType):
        return _union_schema([json_schema(member, refs=refs) for member in args])
    if origin is Literal:
        values = [value.value if isinstance(value, Enum) else value for value in args]
        return {"const": values[0]} if len(values) == 1 else {"enum": values}
    if origin is list:
        return {"type": "array", "items": json_schema(args[0], refs=refs)}
    if origin is dict:
        return {"type": "object", "additionalProperties": json_schema(args[1], refs=refs)}
    if is_typeddict(annotation):
        return _object_schema(annotation, refs)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return {"enum": [member.value for member in annotation]}
    if annotation in PLAIN_TYPES:
        return {"type": PLAIN_TYPES[annotation]}
    if annotation is object:
        return {}
    raise TypeError(f"no JSON Schema for {annotation!r}")


def _object_schema(typed_dict: Any, refs: Mapping[type, str]) -> dict[str, Any]:
    fields = get_type_hints(typed_dict, include_extras=True)
    schema = {
        "type": "object",
        "required": [name for name in fields if name in typed_dict.__required_keys__],
        "additionalProperties": False,
        "properties": {name: json_schema(annotation, refs=refs) for name, annotation in fields.items()},
    }
    # A TypedDict without a docstring of its own gets dict's.
    if typed_dict.__doc__ and typed_dict.__doc__ != dict.__doc__:
        schema["description"] = typed_dict.__doc__
    return schema


def _union_schema(members: list[dict[str, Any]]) -> dict[str, Any]:
    # `{"type": ["string", "null"]}` reads better than an anyOf where one member is a plain typed schema.
    nullable = [member for member in members if member != {"type": "null"}]
    if len(nullable) == len(members) - 1 == 1 and isinstance(nullable[0].get("type"), str):
        return nullable[0] | {"type": [nullable[0]["type"], "null"]}
    return {"anyOf": members}
