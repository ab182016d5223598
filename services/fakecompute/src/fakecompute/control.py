"""The compute host: its instances, their consoles, and its bus methods (Nova's compute API).

    host = ComputeHost(specs, settings, consoleauth_client)
    host.start_consoles()                    # one RFB server per built-in instance
    BusServer(listen, host.handlers()).start()

``get_vnc_console`` authorizes a token with consoleauth (naming this host's control
endpoint, so consoleauth can call ``validate_console_port`` back) and returns it with the
access URL; ``delete_instance`` stops an instance's console and revokes its tokens.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from console_common import __version__
from console_common.net.bus import BusClient
from console_common.proto.bus import BusUnavailable, Unavailable, UnknownInstance
from console_common.proto.tokens import token_id

from fakecompute.instances import InstanceSpec
from fakecompute.qmp import QmpError, set_vnc_password
from fakecompute.rfbserver import BuiltinConsole
from console_common.proto.urls import access_url

log = structlog.get_logger("fakecompute")
OTP_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
OTP_LENGTH = 8  # VNC authentication keys DES with at most 8 characters


def one_time_password() -> str:
    return "".join(secrets.choice(OTP_ALPHABET) for _ in range(OTP_LENGTH))


@dataclass(frozen=True, slots=True)
class HostSettings:
    vncserver_listen: str
    vncserver_proxyclient_address: str
    vnc_port_base: int
    novncproxy_base_url: str
    xvpvncproxy_base_url: str
    public_url: str  # this host's control endpoint as consoleauth reaches it


class Instance:
    """A fake instance: where the proxy finds its console, and its RFB server if built in."""

    def __init__(self, spec: InstanceSpec, host: str, port: int,
                 console: BuiltinConsole | None) -> None:
        self.spec, self.host, self.port, self.console = spec, host, port, console
        self.deleted = False

    def describe(self) -> dict[str, Any]:
        return {"name": self.spec.name, "uuid": self.spec.uuid, "host": self.host,
                "port": self.port, "kind": self.spec.kind,
                "password": self.spec.password is not None}


def plan_instances(specs: tuple[InstanceSpec, ...], settings: HostSettings) -> list[Instance]:
    """Built-in instances get vnc_port_base + i (i counts built-ins only)."""
    out, i = [], 0
    for spec in specs:
        if spec.builtin:
            port = settings.vnc_port_base + i
            i += 1
            if port > 65535:
                raise ValueError(f"instance {spec.name}: port {port} is beyond 65535 "
                                 "(lower vnc_port_base or use fewer instances)")
            console = BuiltinConsole(spec, settings.vncserver_listen, port)
            out.append(Instance(spec, settings.vncserver_proxyclient_address, port, console))
        else:
            assert spec.host is not None and spec.port is not None
            out.append(Instance(spec, spec.host, spec.port, None))
    return out


class ComputeHost:
    def __init__(self, specs: tuple[InstanceSpec, ...], settings: HostSettings,
                 consoleauth: BusClient) -> None:
        self.settings = settings
        self.consoleauth = consoleauth
        self.instances = plan_instances(specs, settings)

    # --- lifecycle ----------------------------------------------------------------------
    def start_consoles(self) -> None:
        """Bind every built-in console; OSError names the address that failed."""
        for inst in self.instances:
            if inst.console is not None:
                try:
                    inst.console.start()
                except OSError as exc:
                    self.stop("start failed")
                    raise OSError(exc.errno, f"cannot listen on {inst.console.listen}:"
                                  f"{inst.console.port} for {inst.spec.name}: "
                                  f"{exc.strerror or exc}") from exc

    def stop(self, reason: str) -> None:
        for inst in self.instances:
            if inst.console is not None and not inst.deleted:
                inst.console.stop(reason)

    def set_public_url(self, url: str) -> None:
        self.settings = dataclasses.replace(self.settings, public_url=url)

    # --- lookup -------------------------------------------------------------------------
    def find(self, instance_id: str) -> Instance:
        for inst in self.instances:
            if not inst.deleted and instance_id in (inst.spec.name, inst.spec.uuid):
                return inst
        raise UnknownInstance(f"no instance {instance_id!r} on this compute host")

    def live(self) -> list[Instance]:
        return [inst for inst in self.instances if not inst.deleted]

    # --- bus methods --------------------------------------------------------------------
    def handlers(self) -> dict[str, Callable[[Any], Any]]:
        return {
            "get_vnc_console": self.get_vnc_console,
            "list_instances": self.list_instances,
            "delete_instance": self.delete_instance,
            "validate_console_port": self.validate_console_port,
            "ping": self.ping,
        }

    def get_vnc_console(self, args: dict[str, Any]) -> dict[str, Any]:
        inst = self.find(args["instance_id"])
        console_type = args["console_type"]
        secret = {} if (password := self._console_password(inst)) is None \
            else {"password": password}
        try:
            auth = self.consoleauth.call(
                "authorize_console", console_type=console_type, host=inst.host, port=inst.port,
                instance_uuid=inst.spec.uuid, compute_url=self.settings.public_url, **secret)
        except BusUnavailable as exc:
            raise Unavailable(f"consoleauth unreachable: {exc}") from exc
        token = auth["token"]
        s = self.settings
        url = access_url(console_type, token, s.novncproxy_base_url, s.xvpvncproxy_base_url)
        log.info("console.authorized", instance=inst.spec.name, instance_uuid=inst.spec.uuid,
                 console_type=console_type, token_id=token_id(token),
                 target=f"{inst.host}:{inst.port}")
        return {"token": token, "access_url": url, "host": inst.host, "port": inst.port,
                "internal_access_path": None, "instance_uuid": inst.spec.uuid,
                "console_type": console_type, "expires_at": auth["expires_at"]}

    def _console_password(self, inst: Instance) -> str | None:
        """The password this console's VNC server wants: with a QMP socket a fresh
        one-time password set on QEMU now (the one before stops working), else the
        instance's fixed one, if any."""
        if inst.spec.qmp is None:
            return inst.spec.password
        password = one_time_password()
        try:
            set_vnc_password(inst.spec.qmp, password)
        except QmpError as exc:
            log.warning("console.password_failed", instance=inst.spec.name, error=str(exc))
            raise Unavailable(f"cannot set the console password of {inst.spec.name}: "
                              f"{exc}") from exc
        return password

    def list_instances(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"instances": [inst.describe() for inst in self.live()]}

    def delete_instance(self, args: dict[str, Any]) -> dict[str, int]:
        inst = self.find(args["instance_id"])
        inst.deleted = True  # from now on validate_console_port says no
        clients = 0
        if inst.console is not None:
            clients = inst.console.clients
            inst.console.stop("instance deleted")
        try:
            deleted = self.consoleauth.call("delete_tokens_for_instance",
                                            instance_uuid=inst.spec.uuid)["deleted"]
        except BusUnavailable as exc:
            log.warning("instance.deleted", instance=inst.spec.name, instance_uuid=inst.spec.uuid,
                        closed_connections=clients, tokens_revoked=None, error=str(exc))
            raise Unavailable(f"instance {inst.spec.name} deleted, but consoleauth is "
                              f"unreachable so its tokens were not revoked now (they fail "
                              f"validate_console_port): {exc}") from exc
        log.info("instance.deleted", instance=inst.spec.name, instance_uuid=inst.spec.uuid,
                 closed_connections=clients, tokens_revoked=deleted)
        return {"deleted": deleted}

    def validate_console_port(self, args: dict[str, Any]) -> dict[str, bool]:
        uuid, port = args["instance_uuid"], args["port"]
        valid = any(inst.spec.uuid == uuid and inst.port == port for inst in self.live())
        return {"valid": valid}

    def ping(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"service": "fake-compute", "version": __version__,
                "instances": len(self.live()), "host": self.settings.public_url}
