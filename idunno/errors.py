"""What the Python client raises: the cluster's typed errors, and three of its own.

Every failure is a :class:`~net.errors.ClusterError` whose message is one line for
a person.  The cluster's own kinds come through as they are (:class:`NotFound` for an
unknown file or job, :class:`Invalid` for a bad argument, :class:`NotReady` when no
leader answered in time, :class:`NoQuorum`, :class:`Conflict`); the client adds:

* :class:`Unreachable`: no usable reply at all (the node is down or too slow, or uses
  another cluster secret).  ``python -m console`` exits 3 for it.
* :class:`UsageError`: the words do not fit (an unknown command, the wrong number of
  arguments, a node that is neither ``HOST:PORT`` nor in the cluster file, an
  unusable cluster file).  ``python -m console`` exits 2.
* :class:`Refused`: a node refused or failed a console command run with
  :meth:`~idunno.AsyncClient.command` (the console's reply carries only the reason,
  not its kind).  ``python -m console`` exits 1, as for every other ClusterError.
"""

from __future__ import annotations

from net.errors import ClusterError, Conflict, Invalid, NoQuorum, NotFound, NotReady

__all__ = [
    "ClusterError",
    "Conflict",
    "Invalid",
    "NoQuorum",
    "NotFound",
    "NotReady",
    "Refused",
    "Unreachable",
    "UsageError",
]


class Unreachable(ClusterError):
    """No usable reply: the node is unreachable, too slow, or uses another secret."""


class UsageError(Invalid):
    """The command, its arguments, the node or the cluster file do not fit at all."""


class Refused(ClusterError):
    """A node refused or failed a console command; the message is its one-line reason."""
