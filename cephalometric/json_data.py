"""JSON from outside read as bounded data: refused, with what is wrong, before it can exhaust the
stack or memory.

Files and request bodies come from other people: JSON nested 100,000 deep makes Python's parser
recurse until it fails, an integer of 400 digits overflows whatever takes it as a size, and
`NaN`/`Infinity` are not JSON at all. `parse_json` refuses those with ValueError (the callers turn
it into one line); `read_json_file` adds a size limit before anything is read.
"""
from __future__ import annotations

import json
import os
from typing import Any

MAX_INT_DIGITS = 30        # longer integers are refused before they are converted
MAX_JSON_DEPTH = 64        # deeper nesting is refused before it is parsed
MAX_JSON_BYTES = 512 << 20   # no file this project writes comes near this


def _bounded_int(text: str) -> int:
    if len(text.lstrip('-')) > MAX_INT_DIGITS:
        raise ValueError(f'an integer of {len(text.lstrip("-"))} digits is too long')
    return int(text)


def _reject_constant(name: str):
    raise ValueError(f'{name} is not a number')


def nesting_depth(text: str) -> int:
    """Deepest nesting of [ and { outside strings (no recursion, linear time)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == '\\':
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in '[{':
            depth += 1
            deepest = max(deepest, depth)
        elif char in ']}':
            depth -= 1
    return deepest


def parse_json(text: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON text as data; ValueError (saying what is wrong) for malformed text, NaN/Infinity,
    integers over MAX_INT_DIGITS digits or nesting deeper than `max_depth`."""
    if nesting_depth(text) > max_depth:
        raise ValueError(f'nested deeper than {max_depth} levels')
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_int=_bounded_int)
    except RecursionError:
        raise ValueError(f'nested deeper than {max_depth} levels') from None


def read_json_file(path: str, max_bytes: int = MAX_JSON_BYTES,
                   max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`parse_json` of a UTF-8 file of at most `max_bytes`; OSError or ValueError otherwise."""
    size = os.path.getsize(path)
    if size > max_bytes:
        raise ValueError(f'{size} bytes, more than the {max_bytes} this reader takes')
    with open(path, encoding='utf-8') as stream:
        try:
            text = stream.read()
        except UnicodeDecodeError:
            raise ValueError('not UTF-8 text') from None
    return parse_json(text, max_depth)
