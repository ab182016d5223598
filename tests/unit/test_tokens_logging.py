"""Tokens (strength, hashing, short ids) and the logging contract (JSON, redaction)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings

import structlog

from console_common.runtime.logging import configure
from console_common.proto.tokens import generate_token, is_acceptable_token, token_hash, token_id


def test_generated_tokens_are_strong_and_url_safe():
    tokens = {generate_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert not any(t.startswith("-") for t in tokens)  # safe as a command-line argument
    for t in list(tokens)[:50]:
        assert len(t) >= 43  # 256 bits in base64url
        assert is_acceptable_token(t)


def test_caller_tokens_rules():
    assert is_acceptable_token("3f2c1c9e-9a4b-4f4e-8d0c-1b6f3c2a9e11")  # Nova's UUID4
    assert not is_acceptable_token("short")
    assert not is_acceptable_token("x" * 257)
    assert not is_acceptable_token("has space" + "x" * 40)
    assert not is_acceptable_token("x" * 40 + "/")


def test_hash_and_id():
    t = "secret-token-" + "x" * 30
    assert token_hash(t) == hashlib.sha256(t.encode()).hexdigest()
    assert token_id(t) == token_hash(t)[:12]
    assert t not in token_id(t)


def _capture(fmt: str):
    stream = io.StringIO()
    configure("testsvc", fmt, "debug", stream=stream)
    return stream


def test_json_lines_have_the_contract_keys_and_no_token():
    stream = _capture("json")
    try:
        secret = "tok-" + "y" * 40
        structlog.get_logger("t").info("session.start", token=secret, password="pw",
                                       instance_uuid="u")
        logging.getLogger("thirdparty").warning("from stdlib")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a library warning", UserWarning, stacklevel=1)
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
        logging.captureWarnings(False)
    assert len(lines) == 3
    for line in lines:
        assert {"timestamp", "level", "service", "event"} <= line.keys()
        assert line["service"] == "testsvc"
        assert line["timestamp"].endswith("Z")
    first = lines[0]
    assert first["token_id"] == token_id(secret)
    assert "token" not in first and "password" not in first
    assert secret not in stream.getvalue() and '"pw"' not in stream.getvalue()
    assert lines[1]["event"] == "from stdlib" and lines[1]["level"] == "warning"
    assert "a library warning" in lines[2]["event"]


def test_console_format_is_readable():
    stream = _capture("console")
    try:
        structlog.get_logger("t").info("service.start", listen="x")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
        logging.captureWarnings(False)
    text = stream.getvalue()
    assert "service.start" in text and "listen=x" in text and not text.startswith("{")
