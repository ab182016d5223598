"""The `instances` option: which fake instances a compute host has (pure, no I/O).

    instances = parse_instances("vm-1,vm-2;password=pw,db=vnc://10.0.0.5:5901", host_id)

Each comma-separated item is
``NAME[=builtin|=vnc://HOST:PORT][;password=PW][;qmp=PATH][;uuid=UUID]``: a built-in
instance gets its own RFB server (a moving test pattern); an external one points at a real
VNC server (Xvnc, QEMU) whose host:port the compute host reports. ``password`` is the VNC
password of the built-in server, or of the external one (e.g. Xvnc's ``-PasswordFile``);
``qmp`` (external QEMU only) is its QMP unix socket: every ``get_vnc_console`` then sets a
fresh one-time password there (``set_password``), as Proxmox does per console ticket. The
password goes to consoleauth with the token, for the proxies' RFB security proxy.
UUIDs default to a stable uuid5 of the compute host's identity and the name, so the same
configuration gives the same UUIDs on every start.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

BUILTIN = "builtin"
EXTERNAL = "vnc"
SPEC_FORM = "NAME[=builtin|=vnc://HOST:PORT][;password=PW][;qmp=PATH][;uuid=UUID]"
MAX_INSTANCES = 256
MAX_PASSWORD = 64

_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}\Z")
_VNC_URL = re.compile(r"\Avnc://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})/?\Z")
_NAMESPACE = uuid.UUID("6f1c3a52-6a0e-4d7e-9a43-2f4f1f3c9b10")  # fixed: stable uuid5s


class InstanceSpecError(ValueError):
    """A bad item in the `instances` option; ``item`` is safe to show (password masked)."""

    def __init__(self, item: str, reason: str) -> None:
        self.item, self.reason = item, reason
        super().__init__(f"bad item {item!r}: {reason} (expected {SPEC_FORM})")


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    name: str
    uuid: str
    kind: str  # BUILTIN or EXTERNAL
    host: str | None = None  # EXTERNAL: where the real VNC server is
    port: int | None = None
    password: str | None = None  # VNC password of its RFB server (built-in or external)
    qmp: str | None = None  # EXTERNAL QEMU: QMP socket for one-time passwords

    @property
    def builtin(self) -> bool:
        return self.kind == BUILTIN


def stable_uuid(host_id: str, name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{host_id}/{name}"))


def mask_item(item: str) -> str:
    """The item as it may be shown in an error: any password replaced by ***."""
    return re.sub(r"(;\s*password\s*=)[^;]*", r"\1***", item)


def parse_item(item: str, host_id: str) -> InstanceSpec:
    shown = mask_item(item)
    head, *params = [p.strip() for p in item.split(";")]
    name, sep, target = head.partition("=")
    name, target = name.strip(), target.strip()
    if not _NAME.match(name):
        raise InstanceSpecError(shown, f"instance name {name!r} must be 1-63 letters, digits, "
                                "'.', '_' or '-', starting with a letter or digit")
    kind, host, port = BUILTIN, None, None
    if sep and target != BUILTIN:
        m = _VNC_URL.match(target)
        if not m:
            raise InstanceSpecError(shown, f"console {target!r} is neither 'builtin' "
                                    "nor vnc://HOST:PORT")
        kind, host, port = EXTERNAL, m.group(1).strip("[]"), int(m.group(2))
        if not 0 < port < 65536:
            raise InstanceSpecError(shown, f"port {port} is not 1-65535")
    password, given_uuid, qmp = None, None, None
    seen: set[str] = set()
    for param in params:
        key, eq, value = (s.strip() for s in param.partition("="))
        if not eq or key not in ("password", "uuid", "qmp"):
            raise InstanceSpecError(shown, f"unknown parameter {key!r} "
                                    "(password=, qmp=, uuid=)")
        if key in seen:
            raise InstanceSpecError(shown, f"{key} given twice")
        seen.add(key)
        if key == "password":
            if not value or len(value) > MAX_PASSWORD:
                raise InstanceSpecError(shown, f"password must be 1-{MAX_PASSWORD} characters")
            password = value
        elif key == "qmp":
            if kind != EXTERNAL or not value:
                raise InstanceSpecError(shown, "qmp=PATH applies to vnc://HOST:PORT instances "
                                        "(QEMU's QMP unix socket)")
            qmp = value
        else:
            try:
                given_uuid = str(uuid.UUID(value))
            except ValueError:
                raise InstanceSpecError(shown, f"uuid {value!r} is not a UUID") from None
    return InstanceSpec(name=name, uuid=given_uuid or stable_uuid(host_id, name), kind=kind,
                        host=host, port=port, password=password, qmp=qmp)


def parse_instances(text: str, host_id: str) -> tuple[InstanceSpec, ...]:
    """Parse the whole option; raises InstanceSpecError naming the first bad item."""
    items = [i.strip() for i in text.split(",") if i.strip()]
    if not items:
        raise InstanceSpecError(text, "no instances given")
    if len(items) > MAX_INSTANCES:
        raise InstanceSpecError(mask_item(items[MAX_INSTANCES]),
                                f"more than {MAX_INSTANCES} instances")
    out: list[InstanceSpec] = []
    names: set[str] = set()
    uuids: set[str] = set()
    for item in items:
        spec = parse_item(item, host_id)
        if spec.name in names:
            raise InstanceSpecError(mask_item(item), f"instance name {spec.name!r} used twice")
        if spec.uuid in uuids:
            raise InstanceSpecError(mask_item(item), f"uuid {spec.uuid} used twice")
        names.add(spec.name)
        uuids.add(spec.uuid)
        out.append(spec)
    return tuple(out)
