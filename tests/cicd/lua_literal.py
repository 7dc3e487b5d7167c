"""Turns a JSON-like Python value into a Lua 5.1 table constructor, the shape Argo CD gives `obj`."""

from __future__ import annotations

import json


def lua_literal(value: object) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid Lua 5.1 string for what the samples hold, except that Lua
        # reads \uXXXX literally: keep the samples ASCII.
        if not value.isascii():
            raise ValueError(f"non-ASCII string in a Lua sample: {value!r}")
        return json.dumps(value)
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(item) for item in value) + "}"
    if isinstance(value, dict):
        # None values are left out: Lua has no null, a missing key reads as nil.
        items = (f"[{json.dumps(key)}] = {lua_literal(item)}"
                 for key, item in value.items() if item is not None)
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"no Lua form for {type(value).__name__}")
