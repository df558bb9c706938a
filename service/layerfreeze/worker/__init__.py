"""Running jobs outside the event loop.

``JobQueue`` is the small interface the API uses; ``LocalWorkerPool`` implements it with worker processes
on this machine. Another implementation (a broker plus shared storage) can replace it without touching the
API or the freezing core.
"""
