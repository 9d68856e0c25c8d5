"""Help that a person reads: ``occlude [COMMAND] --help`` drawn by occlude instead of Typer's default.

The layout: the usage line (``occlude run [OPTIONS] MODEL PATH...``), what the command does, its examples (a
block that is never wrapped: each line fits 80 columns, a comment that does not fit goes on its own line
above its command), then the flags in panels, in the order of :data:`PANELS` (a flag names its panel with
``rich_help_panel=``; one without goes under "Options", last), and the notes (the command's epilog). Each flag
is one row: ``-o, --out DIR`` then its help, wrapped in the column beside it or, when the flag is long, on
the lines under it; a flag's value is named (``N``, ``NUMBER``, ``PATH``, its choices), an on/off flag has
none, and the default closes the help. Nothing is cut off: every line fits the width or wraps.
"""

from __future__ import annotations

import enum
import inspect
import io
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from rich.cells import cell_len
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

# The panels of a command's flags, in the order they are shown (the contract every new flag follows).
PANELS = ("Basics", "Preprocessing", "Output", "Speed", "Medical", "Clusters", "Gates", "Task")
OTHER_PANEL = "Options"

# command path without the program ("" for the group, "run", ...) -> its examples: one command per line,
# "# comment" after two spaces explains it (see the module's docstring).
EXAMPLES: Dict[str, str] = {}

EXAMPLE_WIDTH = 80  # every example line fits this many columns


def console() -> Console:
    """The help's console: stdout as it is now (a test swaps it), wrapping at the terminal's width."""
    return Console(file=sys.stdout, highlight=False)


def print_help(command, ctx) -> None:
    """The help of ``command`` (a Typer command or group) in the context ``ctx``, on stdout."""
    out = console()
    out.print(Text.assemble(("Usage: ", "bold"), usage(command, ctx)), soft_wrap=False)
    out.print()
    description = inspect.cleandoc(command.help or "").partition("\f")[0]
    for i, paragraph in enumerate(description.split("\n\n")):
        if i:
            out.print()
        out.print(Text.from_markup(" ".join(paragraph.split())))
    examples = EXAMPLES.get(_path_without_program(ctx))
    if examples:
        out.print()
        out.print(Text("Examples", style="bold"))
        for line in example_lines(examples):
            out.print(line, soft_wrap=True)  # never wrapped by us: a command stays one line to copy
    out.print()
    commands = getattr(command, "commands", None)
    if commands:  # a group: its commands first
        listed = [(name, c) for name, c in commands.items() if not getattr(c, "hidden", False)]
        rows = [(Text(name, style="bold cyan"), Text(first_sentence(c.help or ""))) for name, c in listed]
        out.print(Panel(rows_text(rows, out.width - 4), title="Commands", title_align="left", border_style="dim"))
    for name, rows in panels(command, ctx):
        out.print(Panel(rows_text(rows, out.width - 4), title=name, title_align="left", border_style="dim"))
    if command.epilog:
        out.print()
        for paragraph in inspect.cleandoc(command.epilog).split("\n\n"):
            out.print(Text.from_markup(paragraph.strip()))


def _path_without_program(ctx) -> str:
    return " ".join(ctx.command_path.split()[1:])


def usage(command, ctx) -> str:
    """``occlude run [OPTIONS] MODEL PATH...``: the arguments by their names (optional ones in brackets)."""
    pieces = [ctx.command_path, "[OPTIONS]"]
    if getattr(command, "commands", None):
        pieces.append("COMMAND [ARGS]...")
    for param in command.get_params(ctx):
        if getattr(param, "param_type_name", "") == "argument":
            name = argument_name(param) + ("..." if param.nargs != 1 else "")
            pieces.append(name if param.required else f"[{name}]")
    return " ".join(pieces)


def argument_name(param) -> str:
    """An argument as help and errors name it: its metavar, or its name in capitals."""
    return str(param.metavar or param.name.upper())


def first_sentence(text: str) -> str:
    """The first sentence of a docstring (the commands list shows only it)."""
    text = " ".join(inspect.cleandoc(text).split())
    for end in (". ", "? "):
        if end in text:
            return text[: text.index(end) + 1]
    return text


# ------------------------------------------------------------------------------------------- examples


def example_lines(text: str, width: int = EXAMPLE_WIDTH) -> List[Text]:
    """The examples block: each command indented by two, its comment (after two spaces and '#') beside it
    when the line fits ``width``, else on its own line above it; a line of its own starting with '#' is a
    comment, an empty line is kept."""
    out: List[Text] = []
    for raw in inspect.cleandoc(text).splitlines():
        line = raw.rstrip()
        command, _, comment = line.partition("  # ")
        if line.lstrip().startswith("# "):
            command, comment = "", line.lstrip()[2:]
        if not line:
            out.append(Text(""))
        elif comment and command and 2 + len(command) + 2 + len(comment) + 2 <= width:
            out.append(Text.assemble("  ", command.strip(), ("  # " + comment, "dim")))
        else:
            if comment:
                out.append(Text("  # " + comment, style="dim"))
            if command:
                out.append(Text("  " + command.strip()))
    return out


# ------------------------------------------------------------------------------------------- flags


def panels(command, ctx) -> List[Tuple[str, List[Tuple[Text, Text]]]]:
    """The command's arguments and flags as (panel, rows), arguments first, then :data:`PANELS` in order, then
    "Options" (flags that name no panel: the help option among them)."""
    grouped: Dict[str, List[Tuple[Text, Text]]] = {}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        if getattr(param, "param_type_name", "") == "argument":
            grouped.setdefault("Arguments", []).append((Text(argument_name(param), style="bold"), help_of(param)))
            continue
        panel = getattr(param, "rich_help_panel", None) or OTHER_PANEL
        if param.name == "help" and getattr(command, "commands", None) is None:
            panel = PANELS[0]  # a command's -h/--help closes its basics
        grouped.setdefault(panel, []).append((flag_text(param), help_of(param)))
    order = ["Arguments", *PANELS]
    known = [(name, grouped.pop(name)) for name in order if name in grouped]
    return known + sorted(grouped.items(), key=lambda item: item[0] == OTHER_PANEL)


def flag_text(param) -> Text:
    """``-o, --out DIR``; ``    --npy/--no-npy``; long-only flags indented under the short ones."""
    short = [o for o in param.opts if not o.startswith("--")]
    long = [o for o in param.opts if o.startswith("--")]
    secondary = [o for o in param.secondary_opts if o.startswith("--")]
    names = ", ".join(short + ["/".join(long + secondary)]) if long else ", ".join(short)
    text = Text("    " if not short else "") + Text(names, style="bold cyan")
    value = value_name(param)
    if value:
        text += Text(" " + value, style="yellow")
    return text


def value_name(param) -> str:
    """What a flag takes: its metavar, its choices (a|b|c), N, NUMBER, PATH or TEXT; nothing for on/off."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    if param.metavar:
        return str(param.metavar)
    descriptor = getattr(param, "type_descriptor", None)
    choices = getattr(descriptor, "choices", None)
    if choices:
        return "|".join(str(getattr(c, "value", c)) for c in choices)
    names: Dict[object, str] = {int: "N", float: "NUMBER", Path: "PATH"}
    return names.get(getattr(descriptor, "annotation", None), "TEXT")


def help_of(param) -> Text:
    """The flag's help (rich markup) and its default, dim, when it has one worth saying."""
    text = Text.from_markup(" ".join(str(getattr(param, "help", "") or "").split()))
    default = default_text(param)
    if default:
        text += Text((" " if text.plain else "") + f"[default: {default}]", style="dim")
    if getattr(param, "required", False) and getattr(param, "param_type_name", "") == "option":
        text += Text(" [required]", style="dim red")
    return text


def default_text(param) -> Optional[str]:
    if getattr(param, "param_type_name", "") != "option" or getattr(param, "show_default", True) is False:
        return None
    default = param.default
    if callable(default) or default is None or default == () or default == []:
        return None
    if isinstance(default, bool):
        if param.secondary_opts:  # --npy/--no-npy: say which one is on
            return param.opts[-1] if default else param.secondary_opts[0]
        return None
    if isinstance(default, enum.Enum):
        default = default.value
    if isinstance(default, str) and not default:
        return '""'
    return str(default)


def rows_text(rows: List[Tuple[Text, Text]], width: int) -> Text:
    """A panel's rows in ``width`` cells: the flag, then its help in the column beside it (wrapped there); a
    flag wider than that column gets a line of its own and its help starts on the next. Never cropped."""
    widest = max((r[0].cell_len for r in rows), default=0)
    left = min(widest, max(12, width // 3))
    right = max(10, width - left - 2)
    lines: List[Text] = []
    for flag, help_text in rows:
        wrapped = list(help_text.wrap(console_for(right), right)) if help_text.plain else [Text("")]
        if flag.cell_len <= left:
            first = flag.copy()
            first.pad_right(left - flag.cell_len + 2)
            lines.append(first + wrapped[0])
            rest = wrapped[1:]
        else:
            lines.extend(flag.wrap(console_for(width), width))
            rest = wrapped
        for line in rest:
            lines.append(Text(" " * (left + 2)) + line)
    return Text("\n").join(lines)


_CONSOLES: Dict[int, Console] = {}


def console_for(width: int) -> Console:
    """A console used only to measure and wrap text at ``width`` (never printed to)."""
    if width not in _CONSOLES:
        _CONSOLES[width] = Console(width=width, highlight=False, color_system=None, file=io.StringIO())
    return _CONSOLES[width]


def fits(text: str, width: int) -> bool:
    """Whether every line of ``text`` fits ``width`` cells (tests hold the help to it)."""
    return all(cell_len(line) <= width for line in text.splitlines())
