"""One audit group member in a process of its own, driven over stdin.

``python -m tests.functional.coordination_member URL GROUP MEMBER_ID``
joins GROUP at the tooz URL as MEMBER_ID (a
:class:`~qimgintrospect.glance.coordination.GroupMember`), prints
``{"member": ..., "run_id": ...}`` and then answers one JSON line per
JSON command line:

* ``{"op": "refresh"}``: ``{"changed", "members", "connected"}``;
* ``{"op": "owned", "ids": [...]}``: ``{"owned": [...]}``, the ids this
  member owns by its ring as last refreshed;
* ``{"op": "claim", "id": ID}``: ``{"claimed": bool}`` (a claim made is
  held until released or the process dies);
* ``{"op": "release", "id": ID}``: ``{"released": bool}``;
* ``{"op": "held", "id": ID}``: ``{"held": bool}``, whether a claim made
  is still this member's;
* ``{"op": "leave"}``: leaves the group, answers ``{"left": true}`` and
  exits.

The tests run three of these to stand for three hosts, and kill them with
SIGKILL to stand for a host lost.
"""

import json
import sys

from qimgintrospect.glance import coordination


def main(url, group, member_id):
    member = coordination.GroupMember(url, member_id=member_id, group=group)
    member.start()
    claims = {}
    _say(member=member.member_id, run_id=member.run_id)
    for line in sys.stdin:
        command = json.loads(line)
        op = command['op']
        if op == 'refresh':
            changed = member.refresh()
            _say(changed=changed, members=sorted(member.members()),
                 connected=member.connected)
        elif op == 'owned':
            _say(owned=[i for i in command['ids'] if member.owns(i)])
        elif op == 'claim':
            claim = member.claim(command['id'])
            if claim is not None:
                claims[command['id']] = claim
            _say(claimed=claim is not None)
        elif op == 'release':
            claim = claims.pop(command['id'], None)
            if claim is not None:
                claim.release()
            _say(released=claim is not None)
        elif op == 'held':
            claim = claims.get(command['id'])
            _say(held=claim is not None and claim.held())
        elif op == 'leave':
            member.stop()
            _say(left=True)
            return
        else:
            _say(error='unknown op %r' % op)


def _say(**answer):
    sys.stdout.write(json.dumps(answer) + '\n')
    sys.stdout.flush()


if __name__ == '__main__':
    main(*sys.argv[1:4])
