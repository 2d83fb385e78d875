"""One line for what the training verbs' parser rejects: which file or option, which key, what was expected.

jsonargparse reports a bad value as a tree (every Union alternative it tried, the given value's type, the usage
text); :func:`describe_parse_error` keeps the branch that explains the mistake and names where the key was set
(a ``--config`` file or the command line). :func:`read_config_files` checks the ``--config`` files first, so a
missing file or bad YAML names the file, which jsonargparse's own message does not.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smec.errors import ConfigError

TOP_KEYS = ("config", "seed_everything", "trainer", "model", "data", "optimizer", "lr_scheduler", "ckpt_path")


def read_config_files(argv: Sequence[str]) -> dict[str, Any]:
    """``{path: parsed YAML}`` of every ``--config`` / ``-c`` file in ``argv``, each checked to be a mapping.

    A value that is not a file but parses as a YAML mapping is an inline config (jsonargparse accepts those)
    and is skipped.
    """
    import yaml

    values: list[str] = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c"):
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise ConfigError("--config: expected a YAML file after it")
            values.append(argv[i + 1])
        elif arg.startswith("--config="):
            values.append(arg.split("=", 1)[1])
    found: dict[str, Any] = {}
    for value in values:
        path = Path(value)
        if not path.exists():
            try:
                inline = yaml.safe_load(value)
            except yaml.YAMLError:
                inline = None
            if isinstance(inline, Mapping):
                continue
            raise ConfigError(f"--config {value}: no such file")
        if path.is_dir():
            raise ConfigError(f"--config {value} is a folder, not a YAML file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"--config {value}: not a UTF-8 text file (expected YAML)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config {value}: not valid YAML: {_yaml_problem(exc)}") from None
        if not isinstance(data, Mapping):
            got = "an empty file" if data is None else f"a {type(data).__name__}"
            raise ConfigError(
                f"--config {value}: expected a mapping of sections (model, data, trainer, ...), got {got}"
            )
        found[value] = data
    return found


def _yaml_problem(exc: Exception) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


@dataclass
class _Node:
    text: str
    indent: int
    children: list[_Node] = field(default_factory=list)


def _tree(message: str) -> _Node:
    """The indented message as a tree; a ``- item`` line's content belongs to the item."""
    root = _Node("", -1)
    stack = [root]
    for raw in message.splitlines():
        text = raw.strip()
        if not text:
            continue
        indent = len(raw) - len(raw.lstrip())
        if text.startswith("- "):
            text, indent = text[2:].strip(), indent + 2
        node = _Node(text, indent)
        while stack[-1].indent >= indent:
            stack.pop()
        stack[-1].children.append(node)
        stack.append(node)
    return root


_PARSER_KEY = re.compile(r'^Parser key "([^"]+)":?$')
_CLASS_PROBLEM = re.compile(r"^Problem with given class_path '([^']+)':?$")
_NOT_ACCEPTED = re.compile(r"^Option '([^']+)' is not accepted")
_EXPECTED = re.compile(r"^Expected a <class '([\w.]+)'>(?:\. Got value: (.*))?$")
_NOISE = (
    "Expected a path but",
    "Not a valid subclass of",
    "Subclass types expect",
    "Does not validate against",
)


@dataclass
class _Finding:
    key: str
    reason: str
    specific: bool  # names a class argument or an import problem (beats a bare type mismatch)


def _readable_types(subtypes: str) -> str:
    """``[list[int], <class 'NoneType'>]`` -> ``list[int] or null``."""
    text = re.sub(
        r"<class '([\w.]+)'>", lambda m: m.group(1), subtypes.strip().removeprefix("[").removesuffix("]")
    )
    text = re.sub(r"\b(?:\w+\.)+(\w+)\b", lambda m: m.group(1), text)
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return " or ".join("null" if p == "NoneType" else p for p in parts if p)


def _arguments_of(class_path: str) -> list[str]:
    import importlib

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        params = inspect.signature(cls.__init__).parameters.values()
    except Exception:  # the suggestion is a nicety: no import problem may hide the real message
        return []
    return [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _join(key: str | None, sub: str, in_class: bool) -> str:
    if key is None:
        return sub
    return f"{key}.init_args.{sub}" if in_class else f"{key}.{sub}"


def _explain(node: _Node, key: str | None, class_path: str | None) -> _Finding | None:
    """What went wrong under ``node`` (a ``Parser key`` or ``Problem with given class_path`` entry)."""
    text = node.text
    match = _PARSER_KEY.match(text)
    if match:
        key = _join(key, match.group(1), class_path is not None)
        return _explain_value(node.children, key, None)
    match = _CLASS_PROBLEM.match(text)
    if match:
        return _explain_class(node.children, key or "?", match.group(1))
    return None


def _explain_class(children: list[_Node], key: str, class_path: str) -> _Finding:
    for child in children:
        unknown = _NOT_ACCEPTED.match(child.text)
        if unknown:
            name = unknown.group(1)
            hint = _suggest(name, _arguments_of(class_path))
            return _Finding(f"{key}.init_args.{name}", f"{class_path} has no argument {name!r}{hint}", True)
        if _PARSER_KEY.match(child.text):
            found = _explain(child, key, class_path)
            if found is not None:
                return _Finding(found.key, found.reason, True)
    detail = " ".join(c.text for c in _flatten(children) if not c.text.startswith(_NOISE))
    if "has no attribute" in detail or "No module named" in detail or "not accessible" in detail:
        return _Finding(key, f"cannot import the class {class_path!r} ({detail})", True)
    return _Finding(key, f"{class_path}: {detail}" if detail else f"{class_path} rejected the value", True)


def _flatten(nodes: list[_Node]) -> list[_Node]:
    out: list[_Node] = []
    for n in nodes:
        out.append(n)
        out += _flatten(n.children)
    return out


def _explain_value(children: list[_Node], key: str, _: Any) -> _Finding:
    subtypes: str | None = None
    expected: list[str] = []
    given: str | None = None
    for child in children:
        if child.text.startswith("Subtypes:"):
            subtypes = child.text.split(":", 1)[1]
        elif child.text.startswith("Given value:"):
            given = child.text.split(":", 1)[1].strip()
        elif child.text == "Errors:":
            for item in child.children:
                found = _explain(item, key, None)
                if found is not None and found.specific:
                    return found
        else:
            match = _EXPECTED.match(child.text)
            if match:
                expected.append(match.group(1))
                given = match.group(2) if match.group(2) is not None else given
    wanted = (
        _readable_types(subtypes) if subtypes else _readable_types(", ".join(expected)) if expected else None
    )
    if wanted:
        return _Finding(
            key, f"expected {wanted}, got {given}" if given is not None else f"expected {wanted}", False
        )
    detail = " ".join(c.text for c in _flatten(children) if not c.text.startswith(("Given value", *_NOISE)))
    return _Finding(key, detail or "invalid value", False)


def _lookup(data: Any, parts: Sequence[str]) -> bool:
    for part in parts:
        if isinstance(data, list):
            return True  # a list of class entries (callbacks): the file sets this key
        if not isinstance(data, Mapping) or part not in data:
            # `model: {class_path, init_args}` may also be written with the arguments directly under `model`.
            if part == "init_args" and isinstance(data, Mapping):
                continue
            return False
        data = data[part]
    return True


def _origin(key: str, argv: Sequence[str], configs: Mapping[str, Any]) -> str | None:
    """Where ``key`` was set: ``--option`` on the command line (the latest wins) or a --config file."""
    for arg in reversed(argv):
        if not arg.startswith("--") or arg.startswith("--config"):
            continue
        name = arg[2:].split("=", 1)[0].removesuffix("+")
        if key == name or key.startswith(name + ".") or name.startswith(key + "."):
            return f"--{name}"
    parts = key.split(".")
    for path in reversed(list(configs)):
        if _lookup(configs[path], parts):
            return path
    return None


def _place(key: str, reason: str, argv: Sequence[str], configs: Mapping[str, Any]) -> str:
    origin = _origin(key, argv, configs)
    if origin is None:
        return f"{key}: {reason}"
    if origin == f"--{key}":
        return f"{origin}: {reason}"
    return f"{origin}: {key}: {reason}"


def describe_parse_error(message: str, argv: Sequence[str], configs: Mapping[str, Any]) -> str:
    """One line for a jsonargparse ``ArgumentError`` message, naming where the bad key was set."""
    verb = next((a for a in argv if not a.startswith("-")), "fit")
    first = message.strip().splitlines()[0] if message.strip() else message
    unknown = re.match(r"^Subcommand '(\w+)' does not accept option '([^']+)'", first)
    if unknown:
        key = unknown.group(2)
        head, _, last = key.rpartition(".")
        choices = _trainer_arguments() if head == "trainer" else list(TOP_KEYS) if not head else []
        reason = f"not an option of smec {unknown.group(1)}{_suggest(last, choices)}"
        return _place(key, reason, argv, configs)
    unrecognized = re.match(r"^unrecognized arguments: (\S+)", first)
    if unrecognized:
        option = unrecognized.group(1).split("=", 1)[0]
        return f"{option}: not an option of smec {verb} (see smec {verb} --help)"
    required = re.match(r"^the following arguments are required: (.+)$", first)
    if required:
        keys = [k.strip().split(".", 1)[-1] for k in required.group(1).split(",")]
        return (
            f"missing {', '.join(keys)}: give a recipe with --config (e.g. configs/mrl.yaml), which sets model "
            "and data"
        )
    root = _tree(message)
    for node in root.children:
        found = _explain(node, None, None)
        if found is not None:
            return _place(found.key, found.reason, argv, configs)
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _trainer_arguments() -> list[str]:
    from lightning.pytorch import Trainer

    return [p for p in inspect.signature(Trainer.__init__).parameters if p != "self"]
