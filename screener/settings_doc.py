"""Render the settings table of README.md from ``Settings`` itself, so the two cannot drift.

python -m screener.settings_doc --write README.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic_core import PydanticUndefined

from screener.config import ENV_PREFIX, Settings

START = "<!-- settings-table: start -->"
END = "<!-- settings-table: end -->"


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        value: object = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if value is None or value == []:
        return "unset"
    return f"`{value}`"


def render_table() -> str:
    """Return the Markdown table of every setting: variable, default, meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {_default(name)} | {meaning} |")
    return "\n".join(rows)


def splice(readme: str) -> str:
    """Return ``readme`` with the table between the markers replaced by the current one."""
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{render_table()}\n{END}{tail}"


def main() -> None:
    """Print the table, or write it into a README."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", type=Path, help="README to update in place")
    args = parser.parse_args()
    if args.write:
        args.write.write_text(splice(args.write.read_text()))
    else:
        print(render_table())


if __name__ == "__main__":
    main()
