"""Bring up a simulated robot and the policy that drives it: the simulator bridge + the policy node.

    ros2 launch astra_ros sim.launch.py checkpoint:=/path/to/ckpt [env:=tabletop] \
        [env_options:="image_size=96;action_bins=64"] [task:=place] [namespace:=sim1] \
        [use_sim_time:=false] [dry_run:=true]
    # then, e.g.:
    ros2 service call /reset_episode astra_ros/srv/ResetEpisode "{seed: 1000000, task: place}"
    ros2 topic pub --once /instruction std_msgs/msg/String "data: '<the instruction it returned>'"
    ros2 topic echo /episode_event

Arguments:
  checkpoint          checkpoint directory of the policy (required)
  env                 astra_sim environment: tabletop | maniskill | metaworld
  env_options         environment options, key=value separated by ';' (values in JSON)
  task                the bridge's task ("" = the env as configured)
  namespace           namespace of both nodes (their relative topics meet there)
  use_sim_time        the bridge publishes /clock and both nodes use it (fixed-rate pose envs only)
  dry_run             the policy node's dry_run (default true: nothing moves; false to drive the
                      simulated robot)
  bridge_params_file  default: the installed config/sim_bridge.yaml
  policy_params_file  default: the installed config/policy.yaml

This file only wires parameters: which bridge topics feed which node inputs for this checkpoint
(cameras, masks, proprioception, one step per observation for pick-and-place) comes from
astra_ros.sim_wiring, the same function the ROS evaluation uses. DDS stays on the host only if the
environment says so (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, FASTDDS_DEFAULT_PROFILES_FILE=
<share>/astra_ros/config/fastdds_loopback.xml; docs/DEPLOYMENT.md).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare


def _truthy(text: str) -> bool:
    return text.lower() in ("true", "1", "yes")


def _nodes(context):
    from astra_ros.sim_wiring import policy_params_for_bridge

    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    checkpoint = arg("checkpoint")
    if not checkpoint:
        raise RuntimeError("sim.launch.py: set checkpoint:=/path/to/checkpoint")
    namespace, sim_time = arg("namespace"), _truthy(arg("use_sim_time"))
    bridge_overrides = {"env": arg("env"), "task": arg("task"), "publish_clock": sim_time}
    env_options = [item.strip() for item in arg("env_options").split(";") if item.strip()]
    if env_options:  # an empty list has no type for rcl: leave the file's value
        bridge_overrides["env_options"] = env_options
    policy_overrides = policy_params_for_bridge(checkpoint, dry_run=_truthy(arg("dry_run")))
    policy_overrides["use_sim_time"] = sim_time
    return [
        Node(package="astra_ros", executable="sim_bridge", name="astra_sim_bridge", namespace=namespace,
             parameters=[arg("bridge_params_file"), bridge_overrides], output="screen", emulate_tty=True),
        LifecycleNode(package="astra_ros", executable="policy_node", name="astra_policy", namespace=namespace,
                      parameters=[arg("policy_params_file"), policy_overrides], output="screen", emulate_tty=True),
    ]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("astra_ros")
    return LaunchDescription([
        DeclareLaunchArgument("checkpoint", default_value="", description="Checkpoint directory of the policy"),
        DeclareLaunchArgument("env", default_value="tabletop", description="astra_sim environment"),
        DeclareLaunchArgument("env_options", default_value="",
                              description="Environment options: key=value;key=value (values in JSON)"),
        DeclareLaunchArgument("task", default_value="", description="Task of the bridge ('' = as configured)"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of both nodes"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="The bridge publishes /clock and both nodes use it (fixed-rate envs)"),
        DeclareLaunchArgument("dry_run", default_value="true",
                              description="Policy node dry_run; false to drive the simulated robot"),
        DeclareLaunchArgument("bridge_params_file", default_value=PathJoinSubstitution([share, "config", "sim_bridge.yaml"]),
                              description="Parameters file of the simulator bridge"),
        DeclareLaunchArgument("policy_params_file", default_value=PathJoinSubstitution([share, "config", "policy.yaml"]),
                              description="Parameters file of the policy node"),
        OpaqueFunction(function=_nodes),
    ])
