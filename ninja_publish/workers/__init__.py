"""Worker processes for room recording (``--workers N``).

The one WebSocket and the ``MultiPeerClient`` stay in the main process; each
stream's peer connection and file writer run in one of N worker processes, so
a room uses every core.  :mod:`.channel` frames messages over the socket pair
between the two, :mod:`.child` is the worker process, :mod:`.remote` is the
main process's stand-in for a recorder living in a worker, and :mod:`.pool`
starts the workers, places streams on them and replaces a worker that dies.
"""
