"""Publishing: what we send and to whom.

``sources`` (:class:`~ninja_publish.publishing.sources.MediaSource`, shared by
every viewer) builds on ``synthetic`` (test pattern and tone with lip-sync
markers), ``file_source`` (``--filesrc``) and ``pacing`` (the wall clock they
share); ``session`` is one viewer's peer connection.
"""
