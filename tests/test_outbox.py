"""The outbox backend's file handling: whole files only, exactly once, on any filesystem."""

from __future__ import annotations

import os
from email.message import EmailMessage
from pathlib import Path

import pytest

from connectors.email.outbox import OutboxBackend


def _message(message_id: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["Message-ID"] = message_id
    message["Subject"] = "Hello"
    message.set_content(body)
    return message


def test_a_repeated_message_keeps_the_first_file_and_leaves_no_temporary_file(tmp_path: Path):
    backend = OutboxBackend(tmp_path)
    with backend:
        backend.send_messages([_message("<m.1@demo.example>", "first")])
        again = backend.send_messages([_message("<m.1@demo.example>", "second")])
    assert again[0].accepted
    assert [path.name for path in tmp_path.iterdir()] == ["m.1@demo.example.eml"]
    assert b"first" in (tmp_path / "m.1@demo.example.eml").read_bytes()


def test_the_outbox_still_writes_once_where_hard_links_are_not_supported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def no_links(source: str, target: str) -> None:
        raise PermissionError(1, "Operation not permitted", source)

    monkeypatch.setattr(os, "link", no_links)
    backend = OutboxBackend(tmp_path)
    with backend:
        backend.send_messages([_message("<m.2@demo.example>", "first")])
        backend.send_messages([_message("<m.2@demo.example>", "second")])
    assert [path.name for path in tmp_path.iterdir()] == ["m.2@demo.example.eml"]
    assert b"first" in (tmp_path / "m.2@demo.example.eml").read_bytes()


def test_a_message_without_message_id_is_refused_not_written(tmp_path: Path):
    message = EmailMessage()
    message.set_content("no id")
    result = OutboxBackend(tmp_path).send_messages([message])
    assert not result[0].accepted and result[0].outcome == "permanent"
    assert list(tmp_path.iterdir()) == []
