"""docs/configuration.md lists every setting of ``sandq.Settings`` once, with its true default;
docs/gateway.md every setting of the gateway's ``GatewaySettings``."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from sandq.gateway.settings import GatewaySettings
from sandq.settings import Settings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
GATEWAY_PAGE = PAGE.with_name("gateway.md")
ROW = re.compile(r"^\| `(SANDQ_[A-Z0-9_]+)` \| ([^|]*) \|", re.M)


def documented(text: str) -> dict[str, list[str]]:
    """Each ``SANDQ_`` variable of the page's setting tables, with the default cells of its rows."""
    rows: dict[str, list[str]] = {}
    for name, default in ROW.findall(text):
        rows.setdefault(name, []).append(default.strip())
    return rows


def shown(field: FieldInfo) -> str:
    """How the page shows a field's default: a code span of its value, ``unset`` for None,
    ``required`` for none at all."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, dict | list):
        text = json.dumps(value)
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = str(value)
    return f"`{text}`"


def problems(text: str, settings: type[BaseSettings] = Settings) -> list[str]:
    """Every disagreement between the page's tables and the fields of ``settings``."""
    rows = documented(text)
    found: list[str] = []
    prefix = str(settings.model_config.get("env_prefix", ""))
    for field_name, field in settings.model_fields.items():
        variable = f"{prefix}{field_name.upper()}"
        cells = rows.pop(variable, [])
        if len(cells) != 1:
            found.append(f"{variable}: {len(cells)} rows, expected 1")
        elif cells[0] != shown(field):
            found.append(f"{variable}: default {cells[0]}, but Settings says {shown(field)}")
    found.extend(f"{variable}: no such setting" for variable in rows)
    return found


def test_every_setting_is_documented_with_its_default() -> None:
    assert problems(PAGE.read_text()) == []


def test_every_gateway_setting_is_documented_with_its_default() -> None:
    assert problems(GATEWAY_PAGE.read_text(), GatewaySettings) == []
    row = "| `SANDQ_GATEWAY_SECRET` | required |"
    wrong = GATEWAY_PAGE.read_text().replace(row, row.replace("required", "`x`"))
    expected = "SANDQ_GATEWAY_SECRET: default `x`, but Settings says required"
    assert problems(wrong, GatewaySettings) == [expected]


def test_check_catches_a_missing_a_wrong_and_an_unknown_setting() -> None:
    text = PAGE.read_text()
    missing = re.sub(r"^\| `SANDQ_API_BURST` .*\n", "", text, flags=re.M)
    wrong = text.replace("| `SANDQ_CONCURRENCY` | `4` |", "| `SANDQ_CONCURRENCY` | `8` |")
    unknown = text + "\n| `SANDQ_NO_SUCH_THING` | `1` | invented |\n"
    assert problems(missing) == ["SANDQ_API_BURST: 0 rows, expected 1"]
    assert problems(wrong) == ["SANDQ_CONCURRENCY: default `8`, but Settings says `4`"]
    assert problems(unknown) == ["SANDQ_NO_SUCH_THING: no such setting"]
