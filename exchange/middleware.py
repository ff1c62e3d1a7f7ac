"""Middleware that keeps Django's request chain asynchronous under ASGI.

WhiteNoise's middleware is synchronous only. One sync-only middleware in an async stack makes
Django switch threads around it on every request (async → sync for it, sync → async for the
rest of the chain, then async → sync again for a sync view): three thread hops per request,
most of an API request's overhead. ``StaticFilesMiddleware`` is WhiteNoise with an async path:
static files are still served by WhiteNoise (in a thread, they are file I/O), everything else
goes straight on to the next middleware without a hop.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(get_response, *args, **kwargs)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: Any) -> Any:
        if self.autorefresh:
            static_file = await sync_to_async(self.find_file)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)
        return await self.get_response(request)
