"""The local VDO.Ninja handshake (signaling) server.

``routers``: what each message means and who receives it (pure, no I/O);
``server``: the WebSocket layer, its bounds and the command line
(``python -m ninja_publish.handshake``).
"""
