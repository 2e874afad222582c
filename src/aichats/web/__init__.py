"""The web app: a single page served at ``/`` that speaks only the public API.

The page's assets ship inside the package (``static/``), so the app works with no network
beyond this server. The only server-side part is the sign-in session (``session.py``),
which keeps the user's API key in an http-only cookie instead of in page storage.
"""
