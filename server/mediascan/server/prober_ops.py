"""What a prober process does with a file besides probing it (`probe.py`): each operation
takes the open descriptor the server sent and returns a JSON-ready answer.

- `fingerprint`: the content fingerprint (`fingerprint.py`): two reads of 64 KiB;
- `decode`: the DECODE verification (`decode_check.py`): the whole file, decoded;
- `hash`: the BLAKE2b-256 hash of the whole file (confirming duplicates).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .decode_check import decode_descriptor
from .fingerprint import content_hash, fingerprint


def _decode(fd: int) -> object:
    return dataclasses.asdict(decode_descriptor(fd))


#: The operations by name, as the pool asks for them.
OPERATIONS: dict[str, Callable[[int], object]] = {
    "fingerprint": fingerprint,
    "decode": _decode,
    "hash": content_hash,
}
