"""The process around one Astra node: init, one executor thread, clean exit on SIGINT/SIGTERM.

Shared by the policy node and the simulator bridge (their `main`s only build the node):
  * rclpy is initialised without its signal handlers: `ShutdownRequest` takes SIGINT/SIGTERM,
    so the second SIGINT that `ros2 launch` sends on Ctrl-C is absorbed and the process exits 0;
  * one SingleThreadedExecutor thread runs every callback (rclpy 9.1's MultiThreadedExecutor
    busy-resubmits callbacks, see docs/DEPLOYMENT.md "Threads and executor");
  * the main thread only waits; on exit it stops the node's own threads, then prints one
    strict-JSON summary line (`<prefix>{...}`) for operators and benchmarks.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from astra_ros.shutdown_signals import ShutdownRequest

MAIN_THREAD_WAIT_S = 0.1  # spin_in_main_thread: longest wait before a signal is seen


def init_ros(argv: Sequence[str]) -> None:
    """rclpy.init without rclpy's signal handlers (ShutdownRequest takes the signals)."""
    rclpy.init(args=list(argv), signal_handler_options=SignalHandlerOptions.NO)


def run_until_shutdown(node: Node, summary_prefix: str, summary: Callable[[], dict],
                       start: Callable[[ShutdownRequest], None] = lambda shutdown: None,
                       stop: Callable[[], None] = lambda: None, spin_in_main_thread: bool = False) -> int:
    """Spin `node` until SIGINT/SIGTERM (or the context ends); -> exit code 0.

    `start(shutdown)` runs in the main thread before the executor spins (e.g. lifecycle
    autostart); `stop()` runs first on the way out (the node's own timers and threads), so that
    `summary()` is final when it is printed. `spin_in_main_thread`: the callbacks run in the
    thread that built the node (and then `stop()` too), for nodes that own thread-bound resources
    (an OpenGL/EGL context is current in the thread that made it: MuJoCo's renderer); signals are
    then handled between executor waits of at most MAIN_THREAD_WAIT_S."""
    shutdown = ShutdownRequest(lambda name, count: node.get_logger().info(
        f"{name}: shutting down" if count == 1 else f"{name} again ({count}): already shutting down"))
    shutdown.install()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=_spin, args=(executor, shutdown), name="astra_executor", daemon=True)
    try:
        start(shutdown)
        if spin_in_main_thread:
            _spin_until(executor, shutdown)
        else:
            spin.start()
            shutdown.wait(also_stop=lambda: not spin.is_alive())
    finally:
        stop()
        executor.shutdown()
        if spin.is_alive():
            spin.join(5.0)
        print(summary_prefix + json.dumps(summary(), allow_nan=False), flush=True)
        node.destroy_node()
        rclpy.try_shutdown(uninstall_handlers=False)  # uninstalling would restore handlers that kill on a late SIGINT
        shutdown.absorb_further_signals()
    return 0


def run_plain_node(make_node: Callable[[list[str]], Node], node_name: str, summary_prefix: str,
                   args: Sequence[str] | None = None) -> int:
    """`main` of a plain (non-lifecycle) node with `summary()` and `shutdown()`: build it from the
    command line, exit 1 naming the reason when it cannot start (bad parameters, a resource that
    cannot be opened: there is nothing to serve), else run it until SIGINT/SIGTERM (exit 0). Its
    callbacks run in the main thread, which built it: a simulator's GL context stays in one thread."""
    argv = list(args if args is not None else sys.argv)
    init_ros(argv)
    try:
        node = make_node(argv)
    except Exception as err:
        print(f"{node_name}: cannot start: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 1
    return run_until_shutdown(node, summary_prefix, node.summary, stop=node.shutdown, spin_in_main_thread=True)


def _spin_until(executor: SingleThreadedExecutor, shutdown: ShutdownRequest) -> None:
    try:
        while not shutdown.requested and executor.context.ok():
            executor.spin_once(timeout_sec=MAIN_THREAD_WAIT_S)
    except ExternalShutdownException:
        pass


def _spin(executor: SingleThreadedExecutor, shutdown: ShutdownRequest) -> None:
    try:
        executor.spin()
    except ExternalShutdownException:
        pass
    finally:
        shutdown.request()  # the executor ended (context shut down elsewhere): stop the process too
