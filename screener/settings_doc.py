"""Render the settings table and the flags of ``screener up`` in README.md from the code, so they cannot drift.

python -m screener.settings_doc --write README.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic_core import PydanticUndefined

from screener.config import ENV_PREFIX, Settings

START = "<!-- settings-table: start -->"
END = "<!-- settings-table: end -->"
FLAGS_START = "<!-- up-flags: start -->"
FLAGS_END = "<!-- up-flags: end -->"


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


def render_up_flags() -> str:
    """Return the Markdown table of every flag of ``screener up``, from its own argument parser."""
    from screener.stack import add_arguments

    parser = argparse.ArgumentParser(prog="screener up", add_help=False)
    add_arguments(parser)
    rows = ["| flag | meaning |", "|---|---|"]
    for action in parser._actions:
        if action.choices:
            value = "\\|".join(str(choice) for choice in action.choices)
        else:
            value = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
        spelled = ", ".join(f"`{flag}`" if action.nargs == 0 else f"`{flag} {value}`" for flag in action.option_strings)
        meaning = (action.help or "").replace("|", "\\|")
        rows.append(f"| {spelled} | {meaning} |")
    return "\n".join(rows)


def _between(text: str, start: str, end: str, body: str) -> str:
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


def splice(readme: str) -> str:
    """Return ``readme`` with the generated parts between their markers replaced by the current ones."""
    text = _between(readme, START, END, render_table())
    if FLAGS_START in text:
        text = _between(text, FLAGS_START, FLAGS_END, render_up_flags())
    return text


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
