"""``frame-buffer dlq list|show|replay|purge``: inspect, reprocess and purge dead letters.

Works on every backend through :class:`~frame_buffer.queue.FrameQueue` (``dead_letters``,
``replay_dead_letters``, ``purge_dead_letters``). Replay moves an entry back to the main stream and
removes it from the dead-letter queue in one step, so it is reprocessed once; purge asks for
confirmation unless ``--yes`` is given, because it cannot be undone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable
from typing import Any

import msgpack

from frame_buffer.commands.common import add_queue_options, integer, settings_from
from frame_buffer.config import ConfigError
from frame_buffer.queue import DeadLetter, FrameQueue

#: Page size when walking the whole dead-letter queue.
_PAGE = 500


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``dlq`` and its actions to the ``frame-buffer`` command."""
    parser = subparsers.add_parser("dlq", help="list, show, replay or purge dead letters")
    actions = parser.add_subparsers(dest="dlq_action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="list dead letters, oldest first")
    listing.add_argument("--count", type=integer(1, 100_000), default=100, help="how many to list")
    listing.add_argument("--after", help="start after this dead-letter id (paging)")

    show = actions.add_parser("show", help="show one dead letter with its frame header")
    show.add_argument("id", help="dead-letter id")

    replay = actions.add_parser("replay", help="publish dead letters back to the main stream, once")
    replay.add_argument("ids", nargs="*", help="dead-letter ids")
    replay.add_argument("--all", action="store_true", help="replay every dead letter")

    purge = actions.add_parser("purge", help="delete dead letters (asks for confirmation)")
    purge.add_argument("ids", nargs="*", help="dead-letter ids (default: all of them)")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    for action in (listing, show, replay, purge):
        add_queue_options(action)
        action.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ask: Callable[[str], str] = input) -> int:
    """Run the chosen action; returns the exit code (1 when a named dead letter does not exist).

    Declares no consumer group: looking at dead letters must not start keeping frames for a group.
    """
    queue = settings_from(args).open_queue(())
    try:
        return run_on(queue, args, ask)
    finally:
        queue.close()


def run_on(queue: FrameQueue, args: argparse.Namespace, ask: Callable[[str], str] = input) -> int:
    """Run the chosen action on an open queue (an in-process memory queue in tests and the demo)."""
    action: Callable[[FrameQueue, argparse.Namespace, Callable[[str], str]], int] = {
        "list": _list, "show": _show, "replay": _replay, "purge": _purge,
    }[args.dlq_action]
    return action(queue, args, ask)


def _all(queue: FrameQueue) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    after = None
    while page := queue.dead_letters(count=_PAGE, after=after):
        letters.extend(page)
        after = page[-1].id
    return letters


def _header(letter: DeadLetter) -> dict[str, Any] | None:
    """The frame header as far as it can be read (it may be what made the entry a dead letter)."""
    if letter.header is None:
        return None
    try:
        fields = msgpack.unpackb(letter.header)
    except (ValueError, msgpack.UnpackException):
        return None
    return {str(k): v for k, v in fields.items()} if isinstance(fields, dict) else None


def _as_dict(letter: DeadLetter, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": letter.id, "original_id": letter.original_id, "group": letter.group, "reason": letter.reason,
        "attempts": letter.attempts, "error": letter.error,
        "dead_lettered_at": datetime.datetime.fromtimestamp(letter.dead_lettered_at_ms / 1000, datetime.UTC)
        .isoformat(timespec="milliseconds"),
    }
    if full:
        out["header"] = _header(letter)
        out["header_bytes"] = None if letter.header is None else len(letter.header)
        out["payload_bytes"] = None if letter.payload is None else len(letter.payload)
    return out


def _list(queue: FrameQueue, args: argparse.Namespace, ask: Callable[[str], str]) -> int:
    try:
        letters = queue.dead_letters(count=args.count, after=args.after)
    except ValueError as exc:  # the backend's word on an id it cannot read (Redis: not ms-seq)
        raise ConfigError(f"--after: {exc}") from None
    if args.json:
        print(json.dumps([_as_dict(letter) for letter in letters]))
        return 0
    for letter in letters:
        item = _as_dict(letter)
        print(f"{item['id']}  {item['dead_lettered_at']}  {item['reason']:<16} attempts={item['attempts']} "
              f"original={item['original_id']} group={item['group']}  {item['error'][:80]}")
    print(f"{len(letters)} dead letter(s) shown from {queue.dead_letter_name}")
    return 0


def _find(queue: FrameQueue, letter_id: str) -> DeadLetter | None:
    return next((letter for letter in _all(queue) if letter.id == letter_id), None)


def _show(queue: FrameQueue, args: argparse.Namespace, ask: Callable[[str], str]) -> int:
    letter = _find(queue, args.id)
    if letter is None:
        print(f"frame-buffer dlq: no dead letter {args.id} in {queue.dead_letter_name}", file=sys.stderr)
        return 1
    item = _as_dict(letter, full=True)
    if args.json:
        print(json.dumps(item, default=str))
    else:
        for key, value in item.items():
            print(f"{key:>16}: {value}")
    return 0


def _replay(queue: FrameQueue, args: argparse.Namespace, ask: Callable[[str], str]) -> int:
    if args.all == bool(args.ids):
        print("frame-buffer dlq replay: give dead-letter ids or --all (not both)", file=sys.stderr)
        return 2
    ids = [letter.id for letter in _all(queue)] if args.all else list(dict.fromkeys(args.ids))
    replayed = queue.replay_dead_letters(ids)
    if args.json:
        print(json.dumps({"replayed": replayed, "requested": len(ids)}))
    else:
        print(f"replayed {replayed} of {len(ids)} dead letter(s) to {queue.settings.stream}")
    return _not_found(queue, "replay", len(ids) - replayed, len(ids))


def _not_found(queue: FrameQueue, action: str, missing: int, requested: int) -> int:
    """1 with one line on stderr when some named dead letters were not there, else 0."""
    if missing <= 0:
        return 0
    print(f"frame-buffer dlq {action}: {missing} of {requested} id(s) not found in {queue.dead_letter_name}",
          file=sys.stderr)
    return 1


def _purge(queue: FrameQueue, args: argparse.Namespace, ask: Callable[[str], str]) -> int:
    ids: list[str] | None = list(dict.fromkeys(args.ids)) or None
    count = len(ids) if ids is not None else len(_all(queue))
    if count == 0:
        print("nothing to purge")
        return 0
    if not args.yes:
        what = f"{count} dead letter(s)" if ids is not None else f"all {count} dead letter(s)"
        try:
            answer = ask(f"purge {what} from {queue.dead_letter_name}? This cannot be undone [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("not purged")
            return 1
    purged = queue.purge_dead_letters(ids)
    if args.json:
        print(json.dumps({"purged": purged}))
    else:
        print(f"purged {purged} dead letter(s) from {queue.dead_letter_name}")
    return _not_found(queue, "purge", count - purged, count) if ids is not None else 0
