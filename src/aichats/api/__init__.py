"""The HTTP API (the AI Chats API under ``/api/v1``); the application is
:func:`aichats.api.app.create_app`.

Nothing is imported here: the web app's routes use the API's auth and inputs modules, and
the application includes the web app's routes, so importing the application from this
package would make ``import aichats.web.routes`` a circular import.
"""
