"""The commented config that ``wsguard config init`` writes: the secure defaults.

Generated from the config dataclasses themselves (their defaults and the
``Attributes:`` part of their docstrings), so that it cannot drift from them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from wsguard import config as cfg

HEADER = """\
# wsguard configuration. Every setting can also come from the environment:
# WSGUARD_<KEY> for a top-level key, WSGUARD_<SECTION>_<KEY> for the others
# (WSGUARD_JWT_SECRET, WSGUARD_SERVER_PORT); lists are comma-separated there,
# tables are name=value pairs. The environment wins over this file; command-line
# flags win over both. Secrets (jwt.secret, admin_token, audit_key) are better
# kept in the environment than in this file.
"""

_ATTRIBUTE = re.compile(r"^\s{8}(\w+): (.*)$")


def _field_docs(cls: type[Any]) -> dict[str, str]:
    """``name -> first line of its description`` from a Google-style docstring."""
    docs: dict[str, str] = {}
    in_attributes = False
    for line in (cls.__doc__ or "").splitlines():
        if line.strip() == "Attributes:":
            in_attributes = True
            continue
        if in_attributes:
            match = _ATTRIBUTE.match(line)
            if match:
                docs[match.group(1)] = match.group(2).strip()
    return docs


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if value != float("inf") else "inf"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def _lines(cls: type[Any], instance: Any) -> list[str]:
    docs = _field_docs(cls)
    lines: list[str] = []
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            continue
        doc = docs.get(f.name, "")
        comment = f"  # {doc}" if doc else ""
        if value is None:
            lines.append(f"# {f.name} = ...{comment}")
        else:
            lines.append(f"{f.name} = {_toml(value)}{comment}")
    return lines


def render_template() -> str:
    """The commented TOML with every setting at its default."""
    parts = [HEADER, ""]
    top = cfg.GuardConfig(jwt=cfg.JwtConfig(secret="x" * 32))
    parts.extend(_lines(cfg.GuardConfig, top))
    for cls in cfg._FLAT_SECTIONS.values():
        parts.extend(_lines(cls, cls()))
    for name, cls in cfg._SECTIONS.items():
        instance = getattr(top, name)
        parts.append("")
        parts.append(f"[{name}]")
        section = _lines(cls, instance)
        if name == "jwt":  # the placeholder secret above is not a default
            section = [line for line in section if not line.startswith("secret =")]
            section.insert(
                1, "# secret = ...  # HS*: at least 32 random bytes; prefer WSGUARD_JWT_SECRET"
            )
        parts.extend(section)
    return "\n".join(parts) + "\n"


CONFIG_TEMPLATE = render_template()
