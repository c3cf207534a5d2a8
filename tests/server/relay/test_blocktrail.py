"""The trail of recent block hashes: a replaced chain is noticed by a head's parent or a log's
block hash, and the fork is the newest block whose hash still agrees."""

from __future__ import annotations

from server.relay.blocktrail import BlockTrail


def h(n: int, branch: str = "a") -> str:
    return "0x" + (branch * 2 + f"{n:062x}")[:64]


def test_heads_that_follow_each_other_are_taken_and_a_wrong_parent_is_noticed() -> None:
    trail = BlockTrail()
    assert trail.add_head(10, h(10), h(9))  # nothing before it is known: taken
    assert trail.add_head(11, h(11), h(10))
    assert trail.add_head(11, h(11), h(10))  # the same head twice is no change
    assert not trail.add_head(12, h(12, "b"), h(11, "b"))  # its parent is not the block 11 read before
    assert not trail.add_head(11, h(11, "b"), h(10))  # block 11 replaced
    assert trail.tip == 11 and trail.hash_of(12) is None


def test_a_log_of_another_block_at_a_known_height_is_noticed() -> None:
    trail = BlockTrail([(5, h(5))])
    assert trail.add_log_block(6, h(6)) and trail.add_log_block(6, h(6).upper().replace("0X", "0x"))
    assert not trail.add_log_block(5, h(5, "b"))


def test_the_fork_is_searched_newest_first_and_forgotten_blocks_go() -> None:
    trail = BlockTrail([(n, h(n)) for n in range(100, 110)])
    assert trail.fork_candidates()[:3] == [109, 108, 107]
    trail.truncate(105)
    assert trail.tip == 105 and 106 not in trail
    gone = trail.prune(final=104, keep=2)
    assert gone == [100, 101] and trail.items()[0] == (102, h(102))
