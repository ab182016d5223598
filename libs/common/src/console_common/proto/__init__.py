"""Pure protocol cores (sans-I/O): bytes in, events and bytes out; no sockets, no gevent.

RFB (``rfb``), WebSocket (``websocket``), HTTP request heads (``httphead``), the bus's
envelopes, messages and errors (``bus``), console tokens (``tokens``) and console URLs
(``urls``). Everything above imports these; they import nothing above them.
"""
