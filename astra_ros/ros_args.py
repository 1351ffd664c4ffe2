"""Array parameters set to `[]` on the command line or in a later parameters file. Pure Python.

rcl cannot infer a type for an empty list, so it silently drops `-p max_step_change:=[]` and a
`max_step_change: []` in a second `--params-file`: the value from an earlier parameters file then
stays in force, which for a safety limit is the opposite of what the user asked for. This module
replays the parameter sources of `--ros-args` in rcl's order (parameters files, then `-p`, each
in command-line order; later wins) and reports the array parameters whose final value is `[]`;
the node then treats them as empty.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Iterable, Sequence

import yaml

_PARAM_RULE = re.compile(r"^(?:(?P<node>[^:]+):)?(?P<name>[A-Za-z_][\w.]*):=(?P<value>.*)$", re.S)


def _ros_arg_spans(argv: Sequence[str]) -> Iterable[list[str]]:
    """The argument lists between `--ros-args` and the next `--` (or the end)."""
    i = 0
    while i < len(argv):
        if argv[i] == "--ros-args":
            j = i + 1
            while j < len(argv) and argv[j] != "--":
                j += 1
            yield list(argv[i + 1:j])
            i = j
        i += 1


def _node_key_matches(key: str, fully_qualified_name: str) -> bool:
    """rcl's node-name keys: '/**', '/**/name', '/ns/*', 'name' (no leading slash: any namespace root)."""
    key = key if key.startswith("/") else "/" + key
    if key == "/**":
        return True
    pattern = key.replace("/**/", "/*/").replace("/**", "/*")
    # '**' also matches an empty namespace: '/**/astra_policy' matches '/astra_policy'
    return fnmatchcase(fully_qualified_name, pattern) or fnmatchcase(fully_qualified_name, key.replace("/**", ""))


class _ParamsFileLoader(yaml.SafeLoader):
    """yaml.SafeLoader that also reads `!!python/tuple` sequences as lists: launch_ros writes the
    dicts of a launch file's `parameters=[...]` with yaml.dump, which tags its tuples so, and
    rcl's parser reads them as plain sequences."""


_ParamsFileLoader.add_constructor("tag:yaml.org,2002:python/tuple",
                                  lambda loader, node: loader.construct_sequence(node))


def _file_arrays(path: str, fully_qualified_name: str) -> dict[str, object]:
    try:
        document = yaml.load(Path(path).read_text(), Loader=_ParamsFileLoader)  # noqa: S506 (a safe loader)
    except (OSError, yaml.YAMLError):
        return {}  # rcl reports unreadable files itself
    values: dict[str, object] = {}
    if isinstance(document, dict):
        for key, section in document.items():
            if _node_key_matches(str(key), fully_qualified_name) and isinstance(section, dict):
                params = section.get("ros__parameters")
                if isinstance(params, dict):
                    values.update(params)
    return values


def emptied_array_parameters(argv: Sequence[str], fully_qualified_name: str, array_names: Iterable[str]) -> set[str]:
    """Names in `array_names` whose last assignment in `argv` (params files first, then -p rules)
    is an empty list, for the node `fully_qualified_name` (e.g. '/astra_policy', '/robot1/astra_policy')."""
    array_names = set(array_names)
    node_name = fully_qualified_name.rsplit("/", 1)[-1]
    final: dict[str, object] = {}
    rules: list[tuple[str, str]] = []
    for span in _ros_arg_spans(argv):
        for flag, value in zip(span, span[1:]):
            if flag == "--params-file":
                final.update({k: v for k, v in _file_arrays(value, fully_qualified_name).items() if k in array_names})
            elif flag in ("-p", "--param"):
                match = _PARAM_RULE.match(value)
                if match and match["name"] in array_names and match["node"] in (None, node_name, fully_qualified_name):
                    rules.append((match["name"], match["value"]))
    for name, text in rules:  # rcl applies -p rules after parameters files
        try:
            final[name] = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
    return {name for name, value in final.items() if value == []}
