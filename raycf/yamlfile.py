"""Reading a YAML file a user wrote (search spaces, task YAMLs): UTF-8 only, and a key given twice in one mapping
is an error naming both lines, never "the later one wins"."""
from __future__ import annotations

from pathlib import Path

import yaml

from raycf.errors import UserError


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with a key given twice (PyYAML keeps the last one silently)."""


def _unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.setdefault(key, key_node.start_mark.line + 1)
        except TypeError:  # an unhashable key: construct_mapping says so below
            continue
        if first != key_node.start_mark.line + 1:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice (lines {first} and {key_node.start_mark.line + 1}); "
                            f"keep one: YAML would silently use the last", key_node.start_mark)
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: str | Path, error: type[UserError]):
    """The YAML document in `path`; raises `error` (one line naming the file and line) for a missing file, a
    folder, text that is not UTF-8, malformed YAML or a duplicate key. An empty document is None."""
    path = Path(path)
    if path.is_dir():
        raise error(["is a folder; give a YAML file"], str(path))
    if not path.exists():
        raise error(["file not found; check the path (relative paths start at the working directory)"], str(path))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a UTF-8 byte-order mark is still UTF-8
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise error([f"line {line}: not UTF-8 text (byte {e.start}); save the file as UTF-8"], str(path)) from None
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or "syntax"
        if "given twice" in str(problem):
            raise error([f"{where}{problem}"], str(path)) from None
        raise error([f"{where}malformed YAML ({problem}); fix the syntax"], str(path)) from None
