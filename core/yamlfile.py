"""Load YAML into pydantic models with errors that name the file, the line and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def node_line(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the deepest YAML node the pydantic location reaches."""
    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _field_path(loc: tuple[int | str, ...]) -> str:
    """`steps[0].wait`; a key with a line break or another control character (or a very
    long one) is shown quoted and escaped, so it cannot break the one-line message."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        text = str(part)
        name = text if text.isprintable() and len(text) <= 80 else ascii(text[:60])
        path += f".{name}" if path else name
    return path or "(top level)"


# Aliases let a few lines stand for a huge document ("billion laughs"); a campaign file is
# a few hundred values at most.
MAX_NODES = 100_000


def _expanded_size(root: yaml.Node | None) -> int:
    """How many values the document holds once every alias is expanded (capped)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # an alias of an enclosing node: counted once, validation says no
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        total = min(total, MAX_NODES + 1)
        sizes[id(node)] = total
        return total

    return 0 if root is None else size(root)


def _yaml_problem(path: Path, text: str, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character
        code = char if isinstance(char, int) else ord(char[:1] or "\0")
        return ConfigError(f"{path}:{line}: not valid YAML: character U+{code:04X} is not allowed")
    where = f"{path}:{mark.line + 1}" if mark else str(path)
    problem = " ".join(str(getattr(exc, "problem", None) or "cannot be parsed").split())
    return ConfigError(f"{where}: not valid YAML: {problem}")


def load_model(path: Path, model: type[M]) -> M:
    """Parse `path` as `model`; any problem becomes a ConfigError naming file:line: field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text; save the file as UTF-8") from None
    try:
        root = yaml.compose(text)
        if _expanded_size(root) > MAX_NODES:
            raise ConfigError(
                f"{path}: more than {MAX_NODES:,} values once its aliases (*name) are expanded"
            )
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _yaml_problem(path, text, exc) from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    try:
        return model.model_validate(data if data is not None else {})
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = tuple(p for p in error["loc"] if not str(p).startswith("function-"))
            line = node_line(root, loc)
            where = f"{path}:{line}" if line else str(path)
            lines.append(f"{where}: {_field_path(loc)}: {error['msg']}")
        raise ConfigError("\n".join(lines)) from None
