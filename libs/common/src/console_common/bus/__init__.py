"""The ZeroMQ request/reply bus between services.

    client = BusClient(config.consoleauth_url, config.consoleauth_timeout)
    info = client.call("check_token", token=t)      # ConnectInfo, or raises InvalidToken
    info = client.check_token(t)                    # the same, coalesced with concurrent checks
    server = BusServer("tcp://0.0.0.0:6085", {"check_token": handle_check_token, ...})
    server.start()
"""

from console_common.bus.client import BusClient
from console_common.bus.errors import (BadRequest, BusError, BusProtocolError, BusTimeout,
                                       BusUnavailable, DeadlineExceeded, InternalError,
                                       InvalidToken, RemoteError, Unavailable, UnknownInstance,
                                       UnknownMethod)
from console_common.bus.messages import AuthorizeArgs, CheckTokenArgs, ConnectInfo
from console_common.bus.server import BusServer

__all__ = ["AuthorizeArgs", "BadRequest", "BusClient", "BusError", "BusProtocolError", "BusServer",
           "BusTimeout", "BusUnavailable", "CheckTokenArgs", "ConnectInfo", "DeadlineExceeded",
           "InternalError", "InvalidToken", "RemoteError", "Unavailable", "UnknownInstance", "UnknownMethod"]
