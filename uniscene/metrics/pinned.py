"""Files of learned weights that a metric reads from the user's disk, each pinned by its sha256.

Nothing is downloaded: a config key names the file and a second key its sha256, checked before
the file is read. `skipped_line` is the one line a metric writes where no file is configured.
"""

import hashlib
from pathlib import Path

from uniscene.errors import UserError


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pinned_file(path, sha256, key: str) -> Path:
    """`path` (config key `key`), checked to exist and to hash to `sha256` (config key `key`'s sibling `sha256`)."""
    section = key.rsplit(".", 1)[0]
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"config key {key} names {path}, which is not a file: point it at the file, or set it to null to skip this metric")
    actual = sha256_of(path)
    if not sha256:
        raise UserError(f"config key {section}.sha256 is not set for {path}: set it to the file's sha256 ({actual}) once you trust the file")
    if actual != str(sha256).lower():
        raise UserError(f"{path} (config key {key}) has sha256 {actual}, config key {section}.sha256 says {sha256}: "
                        f"restore the file, or correct the key")
    return path


def skipped_line(what: str, key: str, example: str) -> str:
    return f"skipped: {what} needs a local weights file (nothing is downloaded); set config key {key} to it (e.g. {example}) and its sha256"
