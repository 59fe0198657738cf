"""YAML to plain data, keeping where every value came from.

pyyaml's SafeLoader silently keeps the last of two duplicate keys and forgets line numbers
once it builds Python objects. A policy with `allow:` written twice must not quietly mean
one of them, and every error must point at a line, so we compose the node tree ourselves.
Bounds are checked on the event stream first: the composer is recursive and aliases can
multiply a small file into a huge tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]

MAX_DEPTH = 64             # nesting of collections; real policies need under 10
MAX_EVENTS = 200_000       # parser events before composing
MAX_NODES = 200_000        # values built, counting every expansion of an alias

_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


@dataclass(slots=True)
class Problem:
    """A YAML-level problem: 1-based line/column and the data path reached so far."""

    line: int
    column: int
    path: Path
    message: str


@dataclass(slots=True)
class Positions:
    """Where each value (and each mapping key) starts, by data path."""

    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def of_value(self, path: Path) -> tuple[int, int]:
        """Position of the value at `path`, else of its nearest ancestor that exists."""
        while path and path not in self.values:
            path = path[:-1]
        return self.values.get(path, (1, 1))

    def of_key(self, path: Path) -> tuple[int, int]:
        """Position of the key that names `path` (better than its value for unknown keys)."""
        return self.keys.get(path) or self.of_value(path)


class YamlDocError(Exception):
    """Raised with every problem found; the caller turns them into PolicyIssues."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.message for p in problems))


def _mark(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _line_col(text: str, index: int) -> tuple[int, int]:
    before = text[:index]
    line = before.count("\n") + 1
    return line, index - (before.rfind("\n") + 1) + 1


def _yaml_problem(exc: yaml.YAMLError, text: str) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line, col = _mark(mark)
        what = " ".join(x for x in (exc.context, exc.problem) if x) or str(exc)
        return Problem(line, col, (), f"invalid YAML: {what}")
    if isinstance(exc, yaml.reader.ReaderError):
        line, col = _line_col(text, exc.position)
        return Problem(line, col, (), f"invalid YAML: unacceptable character #x{exc.character:04x}"
                       if isinstance(exc.character, int) else f"invalid YAML: {exc.reason}")
    return Problem(1, 1, (), f"invalid YAML: {exc}")


def _prescan(text: str) -> None:
    """Reject multi-document, too deep or too large streams before the recursive composer."""
    depth = documents = 0
    for events, event in enumerate(yaml.parse(text, Loader=yaml.SafeLoader), 1):
        if events > MAX_EVENTS:
            line, col = _mark(event.start_mark)
            raise YamlDocError([Problem(line, col, (), f"document too large (over {MAX_EVENTS} YAML events)")])
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line, col = _mark(event.start_mark)
                raise YamlDocError([Problem(line, col, (), f"nested deeper than {MAX_DEPTH} levels")])
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                line, col = _mark(event.start_mark)
                raise YamlDocError([Problem(line, col, (), "expected a single YAML document, found another one")])


class _Builder:
    """Walk the composed node tree into dicts/lists/scalars, recording positions."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.positions = Positions()
        self.problems: list[Problem] = []
        self.nodes = 0

    def problem(self, node: yaml.Node, path: Path, message: str) -> None:
        line, col = _mark(node.start_mark)
        self.problems.append(Problem(line, col, path, message))

    def build(self, node: yaml.Node, path: Path, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES or depth > MAX_DEPTH:
            why = f"over {MAX_NODES} values (alias expansion?)" if self.nodes > MAX_NODES else \
                f"nested deeper than {MAX_DEPTH} levels (recursive alias?)"
            line, col = _mark(node.start_mark)
            raise YamlDocError(self.problems + [Problem(line, col, (), f"document too large: {why}")])
        self.positions.values.setdefault(path, _mark(node.start_mark))
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.loader.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                self.problem(node, path, f"cannot read value: {getattr(exc, 'problem', None) or exc}")
                return None
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                self.problem(node, path, f"unsupported YAML tag {node.tag!r}")
            return [self.build(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                self.problem(node, path, f"unsupported YAML tag {node.tag!r}")
            return self.mapping(node, path, depth)
        self.problem(node, path, "unsupported YAML node")  # pragma: no cover - pyyaml has no others
        return None

    def mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                self.problem(key_node, path, "YAML merge keys ('<<') are not supported: write the keys out")
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                shown = repr(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "a collection"
                self.problem(key_node, path, f"mapping keys must be strings, found {shown} (quote it)")
                continue
            key = key_node.value
            if key in first_seen:
                self.problem(key_node, path + (key,),
                             f"duplicate key {key!r} (first defined at line {first_seen[key]})")
                continue
            first_seen[key] = key_node.start_mark.line + 1
            self.positions.keys[path + (key,)] = _mark(key_node.start_mark)
            result[key] = self.build(value_node, path + (key,), depth + 1)
        return result


def load_yaml_with_positions(text: str) -> tuple[Any, Positions]:
    """Parse one YAML document into plain data plus positions; raise YamlDocError."""
    try:
        _prescan(text)
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise YamlDocError([Problem(1, 1, (), "policy file is empty")])
            builder = _Builder(loader)
            data = builder.build(node, (), 0)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise YamlDocError([_yaml_problem(exc, text)]) from None
    except RecursionError:
        raise YamlDocError([Problem(1, 1, (), f"nested deeper than {MAX_DEPTH} levels")]) from None
    if builder.problems:
        raise YamlDocError(builder.problems)
    return data, builder.positions
