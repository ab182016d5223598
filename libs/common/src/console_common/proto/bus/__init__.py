"""The bus's wire contract: request/reply envelopes, method arguments, typed errors.

The transports that carry them (``BusClient``, ``BusServer``) are in ``console_common.net.bus``.
"""

from console_common.proto.bus.errors import (BadRequest, BusError, BusProtocolError, BusTimeout,
                                             BusUnavailable, DeadlineExceeded, Forbidden,
                                             InternalError,
                                             InvalidToken, RemoteError, Unavailable,
                                             UnknownInstance, UnknownMethod)
from console_common.proto.bus.messages import AuthorizeArgs, CheckTokenArgs, ConnectInfo

__all__ = ["AuthorizeArgs", "BadRequest", "BusError", "BusProtocolError", "BusTimeout",
           "BusUnavailable", "CheckTokenArgs", "ConnectInfo", "DeadlineExceeded", "Forbidden",
           "InternalError", "InvalidToken", "RemoteError", "Unavailable", "UnknownInstance",
           "UnknownMethod"]
