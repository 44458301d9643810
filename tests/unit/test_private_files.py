"""Keys and tokens on disk: whoever writes them, the file is its owner's alone (0600), and a
key made by two processes at once is one key."""

from __future__ import annotations

import stat
from pathlib import Path

from services.badges.credentials import load_ed25519
from shared.files import create_once, write_private
from shared.tools.processes import admin_token


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_admin_token_written_over_a_file_others_could_read_is_private(tmp_path: Path):
    token_file = tmp_path / "admin.token"
    token_file.write_text("an old token\n")
    token_file.chmod(0o644)
    token = admin_token(tmp_path / "tokens.json", token_file)  # no tokens file: a new one
    assert token_file.read_text() == token + "\n"
    assert mode(token_file) == 0o600


def test_a_key_file_is_made_once_and_the_second_maker_reads_the_first(tmp_path: Path):
    key_file = tmp_path / "keys" / "badges-signing.key"
    first = load_ed25519("", key_file, create=True)
    create_once(key_file, "another key")
    assert load_ed25519("", key_file, create=False).key_id == first.key_id
    assert mode(key_file) == 0o600
    write_private(tmp_path / "stack.json", "{}\n")
    assert mode(tmp_path / "stack.json") == 0o600
    assert sorted(p.name for p in tmp_path.rglob("*.tmp")) == []
