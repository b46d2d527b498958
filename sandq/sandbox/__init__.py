"""Sandboxes: the backend interface, the runner protocol, and the backends as peers.

Called by the worker (``sandq.worker``), which makes one backend per process with
``backend.make_backend``. ``runner`` is the stdlib-only program shipped into every sandbox;
``protocol`` is its host side (what a sandbox receives, how its report is read); ``metrics``
counts what the backends see (sandbox starts, boots, the warm pool, Kubernetes API errors).
Backends: ``gvisor`` (local ``runsc``), ``kubernetes`` (a Job per execution), ``simulated``
(queue benchmarks only).
"""
