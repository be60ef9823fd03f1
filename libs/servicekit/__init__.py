"""Runtime plumbing shared by the Gateway and the GameServer.

Config from environment and flags, logging, the health/metrics HTTP endpoint, Redis
connection strings, driving a ZeroMQ socket from the asyncio event loop, and the open-file
limit (``fdlimit``, also used by the test client's load generator and echo server). Nothing
here knows about games; the services stay small because this does not repeat in each.
"""
