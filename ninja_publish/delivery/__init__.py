"""Delivery of finished recordings: uploads to object storage and webhooks.

``retry`` is the backoff policy both share (pure), ``integrity`` the checksums
an upload is verified with (pure), ``keys`` object naming (pure),
``object_store`` the bounded upload queue, ``webhook`` payloads, signing and
the sender.  The plugins ``plugins/upload.py`` and ``plugins/webhooks.py``
wire them to the hooks.  Uploads need the ``[upload]`` extra (obstore, botocore) and
webhooks aiohttp; both are imported only when a flag asks for them.
"""

UPLOAD_EXTRA_HINT = "pip install 'ninja-publish[upload]'"
WEBHOOKS_EXTRA_HINT = "pip install 'aiohttp>=3.9,<4'"
