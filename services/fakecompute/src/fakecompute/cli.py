"""`fake-compute`: a fake compute host (RFB servers for its instances + control endpoint)."""

from __future__ import annotations

from console_common.runtime import early

early.defer_stop_signals()  # first: a Ctrl-C during start-up is a clean stop after it

from gevent import monkey  # noqa: E402

monkey.patch_all()

import re
import sys

import zmq
from console_common import __version__
from console_common.net.bus import BusClient, BusServer
from console_common.runtime.config import COMMON, parse
from console_common.runtime.config.options import zmq_endpoint
from console_common.runtime.keys import curve_client, curve_server
from console_common.runtime.service import EXIT_USAGE, Shutdown, boot

from fakecompute.control import ComputeHost, HostSettings
from fakecompute.instances import SPEC_FORM, InstanceSpecError, parse_instances

PROG = "fake-compute"
OPTIONS = (*COMMON, "vncserver_listen", "vncserver_proxyclient_address", "novncproxy_base_url",
           "xvpvncproxy_base_url", "consoleauth_url", "consoleauth_timeout", "compute_listen",
           "compute_public_url", "instances", "vnc_port_base", "graceful_timeout",
           "bus_secret_key_file", "bus_authorized_keys_dir", "bus_server_key_file")
# What each CURVE role may call on the control endpoint ("admin": everything): consoleauth
# (role server) confirms console ports.
ROLES = {"server": frozenset({"validate_console_port", "ping"}),
         "compute": frozenset({"ping"})}  # its own healthcheck
_ANY_ADDRESS = re.compile(r"\A(tcp://)(0\.0\.0\.0|\*|\[::\])(:.*)\Z")


def public_control_url(listen: str, public: str, proxyclient_address: str) -> str:
    """The control endpoint consoleauth calls back: compute_public_url, else compute_listen
    with a wildcard address replaced by vncserver_proxyclient_address (as Nova does)."""
    if public:
        return public
    m = _ANY_ADDRESS.match(listen)
    if not m:
        return listen
    host = f"[{proxyclient_address}]" if ":" in proxyclient_address else proxyclient_address
    return f"{m.group(1)}{host}{m.group(3)}"


def _usage_error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    config, _ = parse(PROG, "Fake compute host: built-in VNC consoles for fake instances and "
                      "Nova's console API (get_vnc_console) on the ZeroMQ bus.", OPTIONS, argv)
    if config.compute_public_url:
        try:
            zmq_endpoint(config.compute_public_url)
        except ValueError as exc:
            return _usage_error(f"option compute_public_url: bad value from "
                                f"{config.source_of('compute_public_url')}: {exc}")
    host_id = public_control_url(config.compute_listen, config.compute_public_url,
                                 config.vncserver_proxyclient_address)
    try:
        specs = parse_instances(config.instances, host_id)
    except InstanceSpecError as exc:
        return _usage_error(f"option instances: bad item {exc.item!r} from "
                            f"{config.source_of('instances')}: {exc.reason} (expected {SPEC_FORM})")
    log = boot("fake-compute", config)
    settings = HostSettings(
        vncserver_listen=config.vncserver_listen,
        vncserver_proxyclient_address=config.vncserver_proxyclient_address,
        vnc_port_base=config.vnc_port_base, novncproxy_base_url=config.novncproxy_base_url,
        xvpvncproxy_base_url=config.xvpvncproxy_base_url, public_url=host_id)
    consoleauth = BusClient(config.consoleauth_url, config.consoleauth_timeout,
                            curve=curve_client(config, PROG))
    curve = curve_server(config, PROG) if config.bus_authorized_keys_dir else None
    try:
        host = ComputeHost(specs, settings, consoleauth)
    except ValueError as exc:
        return _usage_error(f"option instances: {exc}")
    try:
        host.start_consoles()
    except OSError as exc:
        log.error("service.bind_failed", error=exc.strerror or str(exc))
        print(f"{PROG}: error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    context = zmq.Context()
    if curve is not None:
        curve.start_zap(context, {"bus": frozenset({"server", "admin", "compute"})})
    server = BusServer(config.compute_listen, host.handlers(), context=context, curve=curve,
                       roles=ROLES)
    try:
        bound = server.start()
    except zmq.ZMQError as exc:
        host.stop("start failed")
        log.error("service.bind_failed", endpoint=config.compute_listen, error=str(exc))
        print(f"{PROG}: error: cannot bind {config.compute_listen}: {exc}", file=sys.stderr)
        return 1
    host.set_public_url(public_control_url(bound, config.compute_public_url,
                                           config.vncserver_proxyclient_address))
    log.info("service.start", version=__version__, control=bound,
             public_url=host.settings.public_url, consoleauth=list(config.consoleauth_url),
             vncserver_listen=config.vncserver_listen,
             instances=[{"name": i.spec.name, "uuid": i.spec.uuid, "kind": i.spec.kind,
                         "host": i.host, "port": i.port, "password": i.spec.password is not None}
                        for i in host.instances])
    shutdown = Shutdown().install()
    shutdown.wait()
    log.info("service.stopping", signal=shutdown.signal)
    server.stop(grace=config.graceful_timeout)  # in-flight get_vnc_console calls finish
    host.stop("service stopping")  # consoles of a stopped host go away with it
    consoleauth.close()
    log.info("service.stop", counters=dict(server.counters))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
