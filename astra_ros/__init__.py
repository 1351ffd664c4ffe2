"""Astra ROS 2 glue (node, image conversion, safety checks) + the generated messages.

The package name ``astra_ros`` is shared by two installed parts:

* the hand-written Python sources in this folder, and
* the rosidl-generated interface package (``astra_ros.msg`` and its typesupport
  extensions), installed by CMake into the interpreter's site-packages.

With a colcon install both live in one folder. In a development checkout (the sources
pip-installed editable, the messages built into the venv by scripts/setup.sh) they are
two folders; ``extend_path`` joins every ``astra_ros`` folder found on ``sys.path`` into
this package, so ``astra_ros.msg`` and ``astra_ros.policy_node`` both import whichever
copy of this file runs first. Keep this file free of other imports: importing
``astra_ros`` must not import rclpy.
"""
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
