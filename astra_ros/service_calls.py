"""A blocking service call for code outside the executor's thread (evaluation drivers, tools,
tests): waits for the server, sends, and is woken by the answer (no polling)."""

from __future__ import annotations

import threading


def call_service(client, request, timeout_s: float):
    """`client.call_async(request)` -> its response; TimeoutError when the server is not there or
    does not answer within `timeout_s`. The client's node must be spun by another thread."""
    if not client.wait_for_service(timeout_sec=timeout_s):
        raise TimeoutError(f"service {client.srv_name} is not available after {timeout_s}s")
    answered = threading.Event()
    future = client.call_async(request)
    future.add_done_callback(lambda _: answered.set())
    if not answered.wait(timeout_s):
        raise TimeoutError(f"service {client.srv_name} did not answer within {timeout_s}s")
    return future.result()
