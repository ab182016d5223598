"""Errors of the RFB protocol core."""

from __future__ import annotations


class RFBProtocolError(Exception):
    """The peer broke RFB (RFC 6143): bad version, unknown message, size over a cap, EOF...

    After it is raised the connection object stays in an error state: every later
    ``next_event()`` raises again. Bytes already queued (e.g. a SecurityResult failure
    with its reason) can still be taken with ``data_to_send()`` before closing.
    """


class RFBAuthError(RFBProtocolError):
    """Authentication cannot succeed (no usable security type, no password for VNC auth)."""


class RFBLocalError(RFBProtocolError):
    """We misused the API: ``send()`` of an event that is wrong in the current state."""
