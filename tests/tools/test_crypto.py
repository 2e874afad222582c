"""Sealing secrets at rest (tool servers' headers): with ``AICHATS_SECRET_KEY``, or a key file
generated once, readable by its owner only, the same key for processes that start at once."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from aichats import crypto
from aichats.config import Settings


def test_sealed_text_reads_back_with_the_same_key_only(tmp_path: Path) -> None:
    settings = Settings(secret_key=SecretStr("correct horse battery staple"), files_dir=str(tmp_path))
    token = crypto.seal(settings, '{"Authorization": "Bearer s3cret"}')
    assert "s3cret" not in token and token.isascii()
    assert crypto.seal(settings, "same") != crypto.seal(settings, "same")  # a fresh IV each time
    assert crypto.unseal(settings, token) == '{"Authorization": "Bearer s3cret"}'
    other = Settings(secret_key=SecretStr("another key"), files_dir=str(tmp_path))
    with pytest.raises(crypto.UnsealError, match="another key"):
        crypto.unseal(other, token)
    with pytest.raises(crypto.UnsealError):
        crypto.unseal(settings, token[:-4] + "AAAA")  # altered
    assert not (tmp_path / crypto.KEY_FILE).exists()  # the setting's key: no file


def test_without_a_setting_a_key_file_is_made_once(tmp_path: Path) -> None:
    settings = Settings(files_dir=str(tmp_path / "files"))
    token = crypto.seal(settings, "secret")
    key_file = tmp_path / "files" / crypto.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text()
    assert len(key.strip()) >= 40
    assert crypto.unseal(Settings(files_dir=str(tmp_path / "files")), token) == "secret"
    assert key_file.read_text() == key
    assert [p.name for p in key_file.parent.iterdir()] == [crypto.KEY_FILE]  # no temporary file left


def test_processes_starting_at_once_share_one_key(tmp_path: Path) -> None:
    """Each process seals with the key it found or made; every token reads back with the one key file."""
    files = tmp_path / "files"
    script = (
        "import sys; from aichats import crypto; from aichats.config import Settings; "
        "print(crypto.seal(Settings(files_dir=sys.argv[1]), 'same'))"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(files)], stdout=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    tokens = [process.communicate(timeout=60)[0].strip() for process in processes]
    assert all(process.returncode == 0 for process in processes)
    settings = Settings(files_dir=str(files))
    assert [crypto.unseal(settings, token) for token in tokens] == ["same"] * 8
    assert [p.name for p in files.iterdir()] == [crypto.KEY_FILE]


def test_no_key_file_is_made_until_something_is_sealed(tmp_path: Path) -> None:
    """A turn asks for the sealer whether or not any server has headers: that alone must not
    write a key file (into the working directory, with the default AICHATS_FILES_DIR)."""
    settings = Settings(files_dir=str(tmp_path / "files"))
    sealer = crypto.sealer(settings)
    assert not (tmp_path / "files").exists()
    token = sealer.seal("secret")
    assert (tmp_path / "files" / crypto.KEY_FILE).exists() and sealer.unseal(token) == "secret"
