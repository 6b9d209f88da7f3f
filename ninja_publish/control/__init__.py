"""The live control page of a room recording (``--http``): an aiohttp server with a
JSON API and one page that shows every stream live (Server-Sent Events).

``server.py`` (routes, event stream), ``access.py`` (address, token, Host and
Origin rules), ``snapshot.py`` (what the page and the API show),
``thumbnails.py`` (keyframe thumbnails and audio levels, decoded off the event
loop), ``static/`` (the page: plain HTML, JS and CSS shipped in the package).
"""
