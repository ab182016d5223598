"""The `instances` option of fake-compute: parsing, validation, stable UUIDs (pure)."""

from __future__ import annotations

import uuid

import pytest
from fakecompute.instances import BUILTIN, EXTERNAL, InstanceSpecError, parse_instances, stable_uuid

HOST = "tcp://127.0.0.1:6095"


def test_plain_names_are_builtin_with_stable_uuids() -> None:
    specs = parse_instances("vm-1, vm-2,,", HOST)
    assert [(s.name, s.kind, s.password) for s in specs] == [("vm-1", BUILTIN, None),
                                                             ("vm-2", BUILTIN, None)]
    assert specs[0].uuid == stable_uuid(HOST, "vm-1") == parse_instances("vm-1", HOST)[0].uuid
    assert uuid.UUID(specs[0].uuid).version == 5
    assert specs[0].uuid != specs[1].uuid
    assert parse_instances("vm-1", "tcp://10.0.0.2:6095")[0].uuid != specs[0].uuid


def test_every_form() -> None:
    given = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
    specs = parse_instances(
        f"a=builtin;password=pw, b=vnc://10.1.2.3:5901;uuid={given}, c=vnc://[::1]:5902/", HOST)
    a, b, c = specs
    assert (a.kind, a.password, a.host, a.port) == (BUILTIN, "pw", None, None)
    assert (b.kind, b.host, b.port, b.uuid) == (EXTERNAL, "10.1.2.3", 5901, given)
    assert (c.kind, c.host, c.port) == (EXTERNAL, "::1", 5902)


def test_external_instances_take_a_password_and_a_qmp_socket() -> None:
    (spec,) = parse_instances("q=vnc://127.0.0.1:5901;password=pw;qmp=/run/q.sock", HOST)
    assert (spec.password, spec.qmp, spec.port) == ("pw", "/run/q.sock", 5901)


@pytest.mark.parametrize(("text", "bad", "why"), [
    ("vm-1,bad name", "bad name", "instance name"),
    ("vm-1,-x", "-x", "instance name"),
    ("x=ftp://h:1", "x=ftp://h:1", "neither 'builtin'"),
    ("x=vnc://h:70000", "x=vnc://h:70000", "port 70000"),
    ("x=vnc://h", "x=vnc://h", "neither"),
    ("x;colour=red", "x;colour=red", "unknown parameter 'colour'"),
    ("x;uuid=nope", "x;uuid=nope", "is not a UUID"),
    ("x;password=", "x;password=***", "password must be"),
    ("x;password=a;password=b", "x;password=***;password=***", "given twice"),
    ("x;qmp=/run/q.sock", "x;qmp=/run/q.sock", "applies to vnc://HOST:PORT instances"),
    ("vm-1,vm-1", "vm-1", "used twice"),
    ("a;uuid=3f2504e0-4f89-41d3-9a0c-0305e82c3301,b;uuid=3f2504e0-4f89-41d3-9a0c-0305e82c3301",
     "b;uuid=3f2504e0-4f89-41d3-9a0c-0305e82c3301", "used twice"),
    (" , ", " , ", "no instances"),
])
def test_bad_items_are_named_with_passwords_masked(text: str, bad: str, why: str) -> None:
    with pytest.raises(InstanceSpecError) as info:
        parse_instances(text, HOST)
    assert info.value.item == bad
    assert why in info.value.reason
    assert "NAME[=builtin|=vnc://HOST:PORT]" in str(info.value)
    assert "\n" not in str(info.value)
