"""Resuming after a reconnect: a client's last entry id per stream in -> what to read again out.

A client keeps, per stream, the id of the last event (or ack or heartbeat) it processed, and
sends those ids as `since` when it subscribes again. The gateway then reads each stream after
that id (`Bus.read_after`) and sends what the client's channels match before any live event of
that stream; live events that arrive meanwhile are held and released after the backlog, minus
the ones the backlog already carried. So the client gets every entry once, in stream order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from shared.bus_types import format_id, parse_id
from shared.messages import Stream

# The largest sequence number Redis gives an entry: the entry just before `<ms>-0` is this one
# of the millisecond before.
MAX_SEQUENCE: Final = 2**64 - 1
RESUMABLE: Final = frozenset(stream for stream in Stream if stream is not Stream.TICKS)


class ResumeError(ValueError):
    """Raised for a `since` the gateway cannot honour, with the reason."""


def stream_of(channel: str) -> Stream:
    """Return the stream a (valid) channel name carries."""
    return Stream(channel.partition(":")[0])


def streams_of(channels: Iterable[str]) -> set[Stream]:
    """Return the streams a set of (valid) channel names carry."""
    return {stream_of(channel) for channel in channels}


def resume_plan(
    since: Mapping[str, str], channels: Iterable[str], busy: Iterable[Stream]
) -> dict[Stream, str]:
    """Check a subscribe request's `since` against its channels; return stream -> last id.

    Each stream named must be carried by one of the request's channels, and must not be one
    the client already receives (`busy`): its live events would then come twice.
    """
    requested = streams_of(channels)
    taken = set(busy)
    plan: dict[Stream, str] = {}
    for name, entry_id in since.items():
        try:
            stream = Stream(name)
        except ValueError:
            raise ResumeError(f"since: unknown stream {name!r}") from None
        if stream not in RESUMABLE or stream not in requested:
            raise ResumeError(f"since: {name!r} is not the stream of any channel subscribed here")
        if stream in taken:
            raise ResumeError(
                f"since: {name!r} is already subscribed on this connection; "
                "resume a stream only when subscribing to it anew"
            )
        plan[stream] = format_id(parse_id(entry_id))
    return plan


def entry_before(entry_id: str) -> str | None:
    """Return the greatest possible id below `entry_id` (None below `0-0`)."""
    ms, sequence = parse_id(entry_id)
    if sequence > 0:
        return format_id((ms, sequence - 1))
    if ms > 0:
        return format_id((ms - 1, MAX_SEQUENCE))
    return None
