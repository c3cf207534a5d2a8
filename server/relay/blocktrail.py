"""The hashes of recent blocks: enough to notice that the chain read so far was replaced (a
reorganisation) and to find the block where the old and the new chain part.

Pure bookkeeping without I/O. A block is known by number and hash, from a new head (which also
names its parent, so every new block is checked against the one before it) or from a log (which
names its block's hash). The trail may have holes (a block seen only through its logs); a
replaced block is noticed when a new block's parent, or a log's block hash, disagrees with what
the trail holds. The fork is then found by asking the node for the hashes of the trail's blocks,
newest first, until one agrees (``fork_candidates``).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["BlockTrail", "KEEP_BEYOND_FINAL"]

#: Blocks remembered below the final one: a reorganisation deeper than CONFIRMATIONS (which should
#: not happen, and is repaired by a full rebuild when it does) is still told from a merely long one.
KEEP_BEYOND_FINAL = 64


class BlockTrail:
    """Recent block number -> hash, newest last."""

    def __init__(self, blocks: Iterable[tuple[int, str]] = ()) -> None:
        self._hashes: dict[int, str] = {}
        for number, block_hash in sorted(blocks):
            self._hashes[number] = block_hash.lower()

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, number: object) -> bool:
        return number in self._hashes

    @property
    def tip(self) -> int | None:
        """The newest block known."""
        return max(self._hashes) if self._hashes else None

    def hash_of(self, number: int) -> str | None:
        """The hash recorded for block ``number``, if any."""
        return self._hashes.get(number)

    def items(self) -> list[tuple[int, str]]:
        """(number, hash) of every block known, oldest first."""
        return sorted(self._hashes.items())

    def add_head(self, number: int, block_hash: str, parent_hash: str) -> bool:
        """Record a new head; False (recording nothing) if it contradicts the trail (a replaced chain)."""
        block_hash, parent_hash = block_hash.lower(), parent_hash.lower()
        known = self._hashes.get(number)
        if known is not None:
            return known == block_hash
        parent = self._hashes.get(number - 1)
        if parent is not None and parent != parent_hash:
            return False
        if any(n > number for n in self._hashes):
            return False  # a head below blocks already known: the node went back to another chain
        self._hashes[number] = block_hash
        return True

    def add_log_block(self, number: int, block_hash: str) -> bool:
        """Record the block of a log; False (recording nothing) if the trail holds another hash for it."""
        block_hash = block_hash.lower()
        known = self._hashes.setdefault(number, block_hash)
        return known == block_hash

    def fork_candidates(self) -> list[int]:
        """Blocks to ask the node about, newest first: the first whose hash agrees is where the chains part."""
        return sorted(self._hashes, reverse=True)

    def truncate(self, after: int) -> None:
        """Forget blocks above ``after`` (they were replaced)."""
        for number in [n for n in self._hashes if n > after]:
            del self._hashes[number]

    def prune(self, final: int, keep: int = KEEP_BEYOND_FINAL) -> list[int]:
        """Forget blocks more than ``keep`` below the final one; returns the numbers forgotten."""
        gone = [n for n in self._hashes if n < final - keep]
        for number in gone:
            del self._hashes[number]
        return gone
