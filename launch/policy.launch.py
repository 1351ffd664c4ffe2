"""Launch the Astra policy node (a lifecycle node) with a parameters file.

    ros2 launch astra_ros policy.launch.py checkpoint:=/path/to/ckpt
    ros2 launch astra_ros policy.launch.py checkpoint:=/path/to/ckpt params_file:=/path/to/my.yaml \
        namespace:=robot1 use_sim_time:=true

Arguments:
  checkpoint    checkpoint directory; overrides `checkpoint` in the params file when not empty
  params_file   parameters file (default: the installed config/policy.yaml, every key documented)
  namespace     namespace of the node and of its relative topics/services (default: none)
  use_sim_time  use /clock (Gazebo, rosbag replay) for stamps (default: false)
  autostart     the node configures and activates itself (default: true); set false when a
                lifecycle manager (e.g. nav2_lifecycle_manager) drives the transitions

This file only wires parameters: all behaviour lives in astra_ros/policy_node.py. DDS stays on
the host only if the environment says so (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and
FASTDDS_DEFAULT_PROFILES_FILE=<share>/astra_ros/config/fastdds_loopback.xml, see docs/DEPLOYMENT.md).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.substitutions import FindPackageShare


def _policy_node(context):
    overrides = {
        "use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1", "yes"),
        "autostart": LaunchConfiguration("autostart").perform(context).lower() in ("true", "1", "yes"),
    }
    checkpoint = LaunchConfiguration("checkpoint").perform(context)
    if checkpoint:  # an empty argument must not blank the checkpoint set in the params file
        overrides["checkpoint"] = checkpoint
    return [
        LifecycleNode(
            package="astra_ros",
            executable="policy_node",
            name="astra_policy",
            namespace=LaunchConfiguration("namespace").perform(context),
            parameters=[LaunchConfiguration("params_file").perform(context), overrides],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="Checkpoint directory (overrides the params file when set)"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("astra_ros"), "config", "policy.yaml"]),
                              description="Parameters file of the policy node"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock for time stamps"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="Configure and activate without a lifecycle manager"),
        OpaqueFunction(function=_policy_node),
    ])
