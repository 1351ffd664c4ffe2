"""Declaring and reading a node's parameters from its table: the policy node's (params.py) by
default, the simulator bridge's (bridge_params.py) likewise."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from astra_ros.params import DOUBLE_ARRAY, INTEGER_ARRAY, PARAMETERS, STRING_ARRAY
from astra_ros.ros_args import emptied_array_parameters

_ARRAY_TYPES = {STRING_ARRAY: Parameter.Type.STRING_ARRAY, INTEGER_ARRAY: Parameter.Type.INTEGER_ARRAY,
                DOUBLE_ARRAY: Parameter.Type.DOUBLE_ARRAY}

# Parameters rclpy itself declares (or interprets) on every node.
_BUILTIN_PREFIXES = ("use_sim_time", "qos_overrides.", "start_type_description_service")


ParameterTable = Mapping[str, tuple[Any, str]]  # name -> (default or array type tag, description)


def declare_parameters(node: Node, table: ParameterTable = PARAMETERS) -> None:
    for name, (default, description) in table.items():
        node.declare_parameter(name, _ARRAY_TYPES.get(default, default),
                               ParameterDescriptor(description=description, read_only=True))


def unknown_parameter_names(node: Node, table: ParameterTable = PARAMETERS) -> list[str]:
    """Overrides given for this node (params file / -p) that match no declared parameter.

    rclpy silently ignores such overrides; a typo in the YAML would then run with a default,
    which for e.g. `dry_run` is not acceptable. rclpy keeps the overrides in a private dict;
    if a future rclpy renames it we lose this check, not correctness.
    """
    overrides = getattr(node, "_parameter_overrides", {}) or {}
    return sorted(name for name in overrides
                  if name not in table and not name.startswith(_BUILTIN_PREFIXES))


def read_parameter_values(node: Node, argv: Sequence[str] = (),
                          table: ParameterTable = PARAMETERS) -> tuple[dict[str, Any], set[str]]:
    """-> (name -> value of every declared parameter, array parameters emptied with `[]` in argv).

    Values are not validated here (PolicyNodeParams does that, after the cameras are filled in
    from the checkpoint). Arrays that rcl dropped because they were given as `[]` are read as
    empty (see ros_args.py); the second item names them so the node can say so in its log.
    Raises ValueError on unknown parameter names, listing the valid ones."""
    unknown = unknown_parameter_names(node, table)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; valid parameters: {sorted(table)}")
    arrays = [name for name, (default, _) in table.items() if default in _ARRAY_TYPES]
    emptied = emptied_array_parameters(argv, node.get_fully_qualified_name(), arrays)
    values: dict[str, Any] = {}
    for name in table:
        try:
            value = node.get_parameter(name).value
        except ParameterUninitializedException:
            value = None
        if name in arrays:
            value = [] if value is None or name in emptied else list(value)
        values[name] = value
    overrides = getattr(node, "_parameter_overrides", {}) or {}
    overridden = {name for name in emptied if name in overrides and overrides[name].value is not None}
    return values, overridden


def load_parameters(node: Node, argv: Sequence[str], table: ParameterTable) -> dict[str, Any]:
    """Declare the parameters of `table` on `node` and read them (see read_parameter_values)."""
    declare_parameters(node, table)
    return read_parameter_values(node, argv, table)[0]
