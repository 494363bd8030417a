"""gitkube.services: the endpoints controller and the service proxy."""

#: the service proxy's data paths: native (C threads) when it can be built, or
#: the asyncio relay; ``auto`` picks native when it can be had
RELAY_MODES = ("auto", "native", "asyncio")
