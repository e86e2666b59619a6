"""The worker's changelog-backed state (streams.batch_loop.ChangelogStore) and the pipeline's open sessions:
what is written where, what a flush coalesces, what a partition drop removes. No broker: the changelog
sends are recorded."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException

from models.scoring import ModelCache
from streams.batch_loop import ChangelogStore, fenced
from streams.core.pipeline import DictStore, Incoming, Pipeline, References


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int]] = []

    def __call__(self, topic: str, key: bytes | None, value: bytes | None, partition: int) -> None:
        self.sent.append((topic, key, value, partition))


def test_store_writes_through_to_the_partition_of_the_key() -> None:
    rec = Recorder()
    st = ChangelogStore(rec, "ns.noc-worker-pipeline-changelog")
    st.put(2, "2|win|1:p1", {"a": [1, 2]})
    st.put(4, "4|wm", {"off": {}})
    assert st.get("2|win|1:p1") == {"a": [1, 2]} and st.get("missing") is None
    st.delete(2, "2|win|1:p1")
    assert st.get("2|win|1:p1") is None
    assert [(t, k, p) for t, k, _v, p in rec.sent] == [
        ("ns.noc-worker-pipeline-changelog", b"2|win|1:p1", 2), ("ns.noc-worker-pipeline-changelog", b"4|wm", 4),
        ("ns.noc-worker-pipeline-changelog", b"2|win|1:p1", 2)]
    assert rec.sent[-1][2] is None  # a tombstone: compaction forgets the key
    assert sorted(st.keys()) == ["4|wm"]


def test_drop_removes_only_the_given_partitions() -> None:
    st = ChangelogStore(Recorder(), "c")
    for p in (1, 11, 2):
        st.put(p, f"{p}|wm", {"p": p})
    st.drop({1})
    assert sorted(st.keys()) == ["11|wm", "2|wm"]  # "11|" is not "1|"
    st.drop(set())
    assert len(list(st.keys())) == 2


def _incoming(offset: int, value: bytes) -> Incoming:
    return Incoming("activity", 0, offset, b"k", value, 0)


def test_open_session_coalesces_writes_until_pipeline_commit() -> None:
    """Two process() calls before one commit: the offset marker is written once, after the second call."""
    writes: list[tuple[str, Any]] = []

    class Counting(DictStore):
        def put(self, partition: int, key: str, value: Any) -> None:
            writes.append((key, value))
            super().put(partition, key, value)

    store = Counting()
    pipe = Pipeline(References(), ModelCache())
    pipe.process(store, [_incoming(0, b"garbage")])
    pipe.process(store, [_incoming(1, b"garbage")])
    assert writes == []  # nothing written before the commit
    pipe.commit()
    markers = [v for k, v in writes if k == "0|wm"]
    assert len(markers) == 1 and markers[0]["off"] == {"activity": 1}
    # after a commit a new session starts from the store: a redelivered record is skipped
    res = pipe.process(store, [_incoming(1, b"garbage")])
    assert res.skipped == 1
    pipe.forget_partitions([0])
    res = pipe.process(store, [_incoming(2, b"garbage")])
    assert res.processed["activity"] == 1 and res.dead_letters["MALFORMED"] == 1


def test_watermarks_retry_while_a_fresh_changelog_has_no_leader() -> None:
    import pytest
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    from streams.batch_loop import watermarks

    class Flaky:
        def __init__(self, errors: list[int]) -> None:
            self.errors = errors
            self.calls = 0

        def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
            self.calls += 1
            if self.errors:
                raise KafkaException(KafkaError(self.errors.pop(0)))
            return 0, 7

    c = Flaky([KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE])
    assert watermarks(c, TopicPartition("t", 0)) == (0, 7) and c.calls == 3
    with pytest.raises(KafkaException):  # anything else is not retried
        watermarks(Flaky([KafkaError.TOPIC_AUTHORIZATION_FAILED]), TopicPartition("t", 0))
    with pytest.raises(KafkaException):  # nor past the deadline
        watermarks(Flaky([KafkaError.NOT_LEADER_FOR_PARTITION] * 100), TopicPartition("t", 0), timeout_s=0.3)


def test_cached_states_are_written_through_and_kept_again_when_the_cache_drops() -> None:
    """A decoded state lives once in memory (the pipeline's cache); the store holds it again only when the
    cache is dropped, and a deletion of a state the store no longer holds still reaches the changelog."""
    import orjson

    from models.features import PersonState
    from streams.core.pipeline import _Session

    rec = Recorder()
    st = ChangelogStore(rec, "c")
    objs: dict[str, Any] = {}
    through: set[str] = set()
    s = _Session(st, 0, objs, max_objs=2, through=through)
    ps = s.obj("0|ps|1:a", PersonState.from_dict)
    ps.since_in_activity = 3
    s.mark("0|ps|1:a")
    s.put("0|wm", {"off": {"activity": 7}})
    s.flush("0|wm")
    assert [k for _t, k, _v, _p in rec.sent] == [b"0|ps|1:a", b"0|wm"]  # the offset marker last
    assert orjson.loads(rec.sent[0][2] or b"")["since_in_activity"] == 3
    assert "0|ps|1:a" not in st.data and through == {"0|ps|1:a"}  # only the live copy is in memory

    s = _Session(st, 0, objs, max_objs=2, through=through)
    s.obj("0|ps|1:b", PersonState.from_dict)
    s.mark("0|ps|1:b")
    s.obj("0|dev|1:d", lambda d: PersonState.from_dict(d))
    s.mark("0|dev|1:d")
    rec.sent.clear()
    s.flush("0|wm")  # three cached states > 2: this flush drops the cache
    assert sorted(k for _t, k, _v, _p in rec.sent) == [b"0|dev|1:d", b"0|ps|1:b"]  # "a" is not written again
    assert objs == {} and through == set()
    assert st.get("0|ps|1:a")["since_in_activity"] == 3 and st.get("0|ps|1:b") is not None

    s = _Session(st, 0, objs, max_objs=100, through=through)
    s.obj("0|ps|1:a", PersonState.from_dict)
    s.mark("0|ps|1:a")
    s.flush("0|wm")
    assert "0|ps|1:a" not in st.data
    s = _Session(st, 0, objs, max_objs=100, through=through)
    rec.sent.clear()
    s.delete("0|ps|1:a")  # the store does not hold it: the tombstone must be written anyway
    s.flush("0|wm")
    assert rec.sent == [("c", b"0|ps|1:a", None, 0)] and through == set()


def test_only_membership_refusals_count_as_fenced() -> None:
    assert fenced(KafkaException(KafkaError(KafkaError.UNKNOWN_MEMBER_ID)))
    assert fenced(KafkaException(KafkaError(KafkaError.ILLEGAL_GENERATION)))
    assert not fenced(KafkaException(KafkaError(KafkaError._TRANSPORT)))  # still fatal: not a membership answer
    assert not fenced(KafkaException("no error object"))
