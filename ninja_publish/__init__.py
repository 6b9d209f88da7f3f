"""ninja_publish: the library behind ``publish.py`` (a VDO.Ninja client that records rooms).

Layers, each a subpackage with one job per module:

- ``protocol``: the wire format (hashing, encryption, builders, parser), typed
  signaling events, and the one WebSocket;
- ``webrtc``: ICE configuration and candidates, the ``sendChannel`` data channel;
- ``aiortc_adapter``: the only code that touches aiortc's internals
  (``install()``/``uninstall()``);
- ``codecs``: one table of codec facts, bitstream helpers and depayloaders;
- ``recording``: one stream's recorder, frame writer, timeline, muxer, manifest, status;
- ``publishing``: media sources and one viewer's session;
- ``handshake``: the local handshake server.
"""

__version__ = "0.2.0"
