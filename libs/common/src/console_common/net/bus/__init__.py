"""The ZeroMQ request/reply bus between services.

    client = BusClient(config.consoleauth_url, config.consoleauth_timeout)
    info = client.call("check_token", token=t)      # ConnectInfo, or raises InvalidToken
    info = client.check_token(t)                    # the same, coalesced with concurrent checks
    server = BusServer("tcp://0.0.0.0:6085", {"check_token": handle_check_token, ...})
    server.start()

Envelopes, messages and errors are in ``console_common.proto.bus``.
"""

from console_common.net.bus.client import BusClient
from console_common.net.bus.server import BusServer

__all__ = ["BusClient", "BusServer"]
