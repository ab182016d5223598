"""The least a gevent TCP relay can do: a reference for what gevent itself costs.

    python bench/gevent_floor.py LISTEN_PORT TARGET_PORT

``bench/run.py --floor`` runs one per target as the system ``gevent-floor``: a
StreamServer, a connect to the target, one ``recv``/``sendall`` loop per direction with
TCP_NODELAY: no token, no preamble, no logging, no metrics. What our proxies add over it
is our own cost; what it adds over socat is gevent's (hub switches, socket wrappers).
"""

from gevent import monkey

monkey.patch_all()

import socket  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.server import StreamServer  # noqa: E402


def pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(262144):
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def main() -> None:
    listen, target = int(sys.argv[1]), ("127.0.0.1", int(sys.argv[2]))

    def handle(client: socket.socket, _addr: object) -> None:
        try:
            upstream = socket.create_connection(target)
        except OSError:
            return
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        down = gevent.spawn(pump, upstream, client)
        pump(client, upstream)
        down.join()
        upstream.close()

    StreamServer(("127.0.0.1", listen), handle, backlog=4096).serve_forever()


if __name__ == "__main__":
    main()
