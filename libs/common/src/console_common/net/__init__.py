"""I/O on gevent sockets: connecting to targets, relaying and splicing bytes, WebSocket
streams, and the ZeroMQ bus transports. Built on ``console_common.proto``; knows nothing of
sessions, tokens policy or service start-up.
"""
