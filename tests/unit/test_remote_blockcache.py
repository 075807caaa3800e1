"""The block cache of remote images: blocks, budget, sharing, counters.

The reader here serves a byte string and logs each range asked: the
cache's contract with any reader is only ``read(offset, length)`` and a
``requests`` count. Sharing between processes uses a real second process.
"""

import multiprocessing
import os

import pytest

from qimgintrospect import exception
from qimgintrospect.remote import blockcache
from qimgintrospect import workspace

KiB = 1024
MiB = 1024 * KiB
BLOCK = 64 * KiB


class BytesReader(object):
    """Serves *data*; records every (offset, length) fetched."""

    def __init__(self, data, fail_at=None):
        self.data = data
        self.asked = []
        self.requests = 0
        self.fail_at = fail_at

    def read(self, offset, length):
        self.requests += 1
        self.asked.append((offset, length))
        if self.fail_at is not None and offset <= self.fail_at < (
                offset + length):
            raise exception.ImageRefused(exception.REMOTE_RANGE_MISMATCH,
                                         'lie at %d' % self.fail_at)
        return self.data[offset:offset + length]


@pytest.fixture
def data():
    # Random, so that a misplaced block shows; longer than one request.
    return os.urandom(blockcache.MAX_REQUEST + MiB + 1000)


def _cache(tmp_path, data, budget=None, block_size=BLOCK, **kwargs):
    reader = BytesReader(data, **kwargs)
    cache = blockcache.BlockCache.create(
        str(tmp_path / 'image'), len(data),
        len(data) if budget is None else budget, reader, block_size)
    return cache, reader


def test_read_returns_the_bytes_and_fetches_whole_blocks(tmp_path, data):
    cache, reader = _cache(tmp_path, data)
    assert cache.read(100, 20) == data[100:120]
    assert reader.asked == [(0, BLOCK)]
    assert cache.read(BLOCK - 10, 30) == data[BLOCK - 10:BLOCK + 20]
    assert reader.asked == [(0, BLOCK), (BLOCK, BLOCK)]


def test_a_block_is_fetched_once(tmp_path, data):
    cache, reader = _cache(tmp_path, data)
    for _ in range(3):
        assert cache.read(5 * BLOCK + 3, 2 * BLOCK) == (
            data[5 * BLOCK + 3:7 * BLOCK + 3])
    assert reader.asked == [(5 * BLOCK, 3 * BLOCK)]


def test_missing_neighbours_travel_together_around_present_ones(tmp_path,
                                                                data):
    cache, reader = _cache(tmp_path, data)
    cache.read(2 * BLOCK, 1)
    reader.asked.clear()
    assert cache.read(0, 5 * BLOCK) == data[:5 * BLOCK]
    assert reader.asked == [(0, 2 * BLOCK), (3 * BLOCK, 2 * BLOCK)]


def test_a_request_is_at_most_max_request(tmp_path, data):
    cache, reader = _cache(tmp_path, data)
    assert cache.read(0, len(data)) == data
    assert [length for _, length in reader.asked] == [
        blockcache.MAX_REQUEST, len(data) - blockcache.MAX_REQUEST]
    assert sum(length for _, length in reader.asked) == len(data)


def test_the_last_block_is_cut_at_the_image_end(tmp_path, data):
    cache, reader = _cache(tmp_path, data)
    assert cache.read(len(data) - 10, 10) == data[-10:]
    last = (len(data) - 1) // BLOCK * BLOCK
    assert reader.asked == [(last, len(data) - last)]
    assert os.path.getsize(cache.path) == len(data)


def test_reads_outside_the_image_are_refused(tmp_path, data):
    cache, reader = _cache(tmp_path, data)
    with pytest.raises(ValueError):
        cache.read(len(data) - 1, 2)
    with pytest.raises(ValueError):
        cache.read(-1, 1)
    assert cache.read(7, 0) == b''
    assert reader.asked == []


def test_the_file_holds_exactly_what_was_read(tmp_path, data):
    cache, reader = _cache(tmp_path, data)
    cache.read(BLOCK + 1, 1)
    cache.read(40 * BLOCK, 1)
    with open(cache.path, 'rb') as f:
        kept = f.read()
    expected = bytearray(len(data))
    for offset in (BLOCK, 40 * BLOCK):
        expected[offset:offset + BLOCK] = data[offset:offset + BLOCK]
    assert kept == bytes(expected)
    stats = cache.stats()
    assert stats.blocks_present == 2
    assert stats.bytes_fetched == 2 * BLOCK
    assert stats.allocated <= 2 * BLOCK + 8 * KiB


def test_blocks_of_zeros_are_recorded_but_left_as_holes(tmp_path):
    data = bytes(2 * MiB) + b'\x01' * BLOCK
    cache, reader = _cache(tmp_path, data)
    assert cache.read(0, len(data)) == data
    assert cache.stats().blocks_present == len(data) // BLOCK
    assert cache.stats().allocated <= BLOCK + 8 * KiB
    reader.asked.clear()
    cache.read(MiB, 10)
    assert reader.asked == []


def test_the_budget_stops_a_fetch_before_its_request(tmp_path, data):
    cache, reader = _cache(tmp_path, data, budget=3 * BLOCK)
    cache.read(0, 2 * BLOCK)
    with pytest.raises(exception.InspectionFailed) as caught:
        cache.read(10 * BLOCK, 2 * BLOCK)
    assert caught.value.code == exception.WORKSPACE_QUOTA
    assert reader.asked == [(0, 2 * BLOCK)]
    assert cache.read(10 * BLOCK, 1) == data[10 * BLOCK:10 * BLOCK + 1]
    assert cache.stats().bytes_fetched == 3 * BLOCK


def test_a_failed_fetch_keeps_nothing(tmp_path, data):
    cache, reader = _cache(tmp_path, data, fail_at=4 * BLOCK)
    with pytest.raises(exception.ImageRefused):
        cache.read(3 * BLOCK, 2 * BLOCK)
    assert cache.stats().blocks_present == 0
    assert cache.stats().bytes_fetched == 0
    with open(cache.path, 'rb') as f:
        assert f.read() == bytes(len(data))


def test_insert_keeps_a_first_request_and_counts_it(tmp_path, data):
    cache, reader = _cache(tmp_path, data)
    cache.insert(0, data[:BLOCK], requests=2)
    assert cache.read(0, 100) == data[:100]
    assert reader.asked == []
    assert cache.stats()[3:5] == (BLOCK, 2)
    with pytest.raises(ValueError):
        cache.insert(10, data[10:BLOCK])
    with pytest.raises(ValueError):
        cache.insert(BLOCK, data[BLOCK:BLOCK + 100])


def test_present_says_what_is_in_the_cache(tmp_path, data):
    cache, reader = _cache(tmp_path, data)
    cache.read(BLOCK, BLOCK)
    assert cache.present(BLOCK + 5, 100)
    assert not cache.present(BLOCK, BLOCK + 1)


def test_block_size_must_be_whole_sectors(tmp_path, data):
    with pytest.raises(ValueError):
        _cache(tmp_path, data, block_size=1000)


def test_an_existing_file_is_never_reused(tmp_path, data):
    (tmp_path / 'image').write_bytes(b'old')
    with pytest.raises(FileExistsError):
        _cache(tmp_path, data)
    assert (tmp_path / 'image').read_bytes() == b'old'


def _read_in_child(path, data, offset, length, result):
    reader = BytesReader(data)
    cache = blockcache.BlockCache.attach(path, reader)
    got = cache.read(offset, length)
    result.put((got == data[offset:offset + length], reader.asked))


def test_processes_share_blocks_and_counters(tmp_path, data):
    cache, reader = _cache(tmp_path, data)
    cache.read(0, 10)
    result = multiprocessing.get_context('fork').Queue()
    child = multiprocessing.get_context('fork').Process(
        target=_read_in_child,
        args=(cache.path, data, 0, 3 * BLOCK, result))
    child.start()
    same, asked_by_child = result.get(timeout=30)
    child.join(30)
    assert same
    # The child found block 0 in the cache and fetched only 1 and 2.
    assert asked_by_child == [(BLOCK, 2 * BLOCK)]
    # And this process finds the child's blocks.
    assert cache.read(BLOCK, 2 * BLOCK) == data[BLOCK:3 * BLOCK]
    assert reader.asked == [(0, BLOCK)]
    stats = cache.stats()
    assert (stats.bytes_fetched, stats.requests, stats.blocks_present) == (
        3 * BLOCK, 2, 3)


def test_slot_reserve_counts_against_the_quota(tmp_path):
    ws = workspace.Workspace(str(tmp_path / 'ws'), 10 * MiB, 0, 2, 0)
    with ws.slot() as slot:
        slot.reserve(6 * MiB, 'remote cache')
        assert ws.reserved_bytes() == 6 * MiB
        with pytest.raises(exception.InspectionFailed) as caught:
            slot.reserve(5 * MiB, 'more')
        assert caught.value.code == exception.WORKSPACE_QUOTA
    with ws.slot() as slot:
        assert ws.reserved_bytes() == 0
