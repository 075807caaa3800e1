"""Streams into a workspace slot (Slot.receive), inspected in that slot.

What the Glance front ends add to the workspace: a download written into a
slot under the quota, then inspected by the core in that same slot.
"""

import os

import pytest

from qimgintrospect import api
from qimgintrospect import exception
from qimgintrospect import workspace
from testkit import config
from testkit import imagebuilder

MiB = 1024 * 1024


def _workspace(directory, quota_mb=64, max_workers=1):
    return workspace.Workspace(str(directory), quota_mb * MiB, 0,
                               max_workers, 0)


def _chunks(path, size=64 * 1024):
    with open(path, 'rb') as f:
        while True:
            chunk = f.read(size)
            if not chunk:
                return
            yield chunk


def test_receive_writes_the_stream_with_holes_for_zeros(tmp_path):
    ws = _workspace(tmp_path / 'ws')
    data = os.urandom(MiB) + bytes(6 * MiB) + os.urandom(MiB)
    chunks = [data[i:i + MiB] for i in range(0, len(data), MiB)]

    with ws.slot() as slot:
        copy = slot.receive(iter(chunks), len(data))

        assert (copy.size, copy.bytes_copied, copy.method) == (
            len(data), 2 * MiB, 'stream')
        with open(copy.path, 'rb') as f:
            assert f.read() == data
        assert os.stat(copy.path).st_blocks * 512 < 4 * MiB
        assert os.stat(copy.path).st_mode & 0o777 == 0o600
        assert ws.reserved_bytes() == len(data)
    assert config.workspace_leftovers(ws.directory) == []


def test_receive_refuses_before_writing_when_the_quota_is_short(tmp_path):
    ws = _workspace(tmp_path / 'ws', quota_mb=1)
    pulled = []

    def chunks():
        pulled.append(1)
        yield b'x'

    with ws.slot() as slot:
        with pytest.raises(exception.InspectionFailed) as err:
            slot.receive(chunks(), 2 * MiB)
        assert err.value.code == 'workspace-quota-exceeded'
        assert pulled == []
        assert os.listdir(slot.directory) == []


def test_receive_refuses_a_stream_longer_than_announced(tmp_path):
    ws = _workspace(tmp_path / 'ws')
    with ws.slot() as slot:
        with pytest.raises(exception.InspectionFailed) as err:
            slot.receive(iter([b'a' * 10, b'b' * 10]), 15)
        assert err.value.code == 'workspace-quota-exceeded'
    assert config.workspace_leftovers(ws.directory) == []


def test_errors_of_the_stream_pass_through_and_the_slot_is_emptied(
        tmp_path):
    ws = _workspace(tmp_path / 'ws')

    def broken():
        yield b'a' * 100
        raise ConnectionResetError('peer went away')

    with pytest.raises(ConnectionResetError):
        with ws.slot() as slot:
            slot.receive(broken(), 1000)
    assert config.workspace_leftovers(ws.directory) == []


def test_a_received_download_is_inspected_in_its_slot(conf, tmp_path):
    conf.set_override('max_workers', 1, 'introspection_workspace')
    image = imagebuilder.vmdk(tmp_path, 'bus.vmdk',
                              subformat='streamOptimized', adapter='buslogic')
    ws = workspace.Workspace.from_conf(conf)

    with ws.slot() as slot:
        copy = slot.receive(_chunks(image), os.path.getsize(image))
        # With max_workers=1, a slot of the core's own would wait for the
        # one held here: workspace-busy.
        result, = api.inspect_many([api.ImageRequest(copy.path, 'vmdk')],
                                   conf, slot=slot)
        assert os.path.exists(copy.path)  # the core did not wipe the slot
    assert result.properties['vmware_adaptertype'] == 'busLogic'
    assert config.workspace_leftovers(ws.directory) == []
