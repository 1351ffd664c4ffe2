"""QoS profiles of the Astra nodes, defined once (policy node, simulator bridges, recorder).

  SENSOR_QOS       camera frames and poses: best effort, keep last 5 (ROS's sensor-data profile).
                   A late frame is worth nothing, and a reliable image stream backs up.
  INSTRUCTION_QOS  reliable + transient local, depth 1: a node that starts (or restarts) after
                   the instruction was published still gets the current one, and it is never lost.
  STATUS_QOS       reliable + transient local, depth 1: a monitor that joins late sees the last status.
  COMMAND_QOS      reliable, keep last 10: commands are not dropped on a healthy link, and a
                   subscriber that falls behind gets the newest ones.
  EVENT_QOS        reliable + transient local, keep last 20: episode events (simulator bridge) are
                   never lost, and an evaluator that subscribes late still sees the recent ones.
  CLOCK_QOS        best effort, keep last 1: /clock as rclpy's TimeSource subscribes to it (only
                   the newest simulated time matters).
"""

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

SENSOR_QOS: QoSProfile = qos_profile_sensor_data
INSTRUCTION_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
STATUS_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
EVENT_QOS = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
CLOCK_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)
