"""The local gVisor backend: one fresh ``runsc`` sandbox per execution, on the worker's own host.

Called by the worker through ``sandq.sandbox.backend.make_backend``. ``backend`` takes a
sandbox from the warm ``pool`` (or starts one cold, on one of the ``booting`` slots), hands it
the job and classifies what came out; ``sandbox`` is one ``runsc run`` and its teardown;
``streams`` reads its pipes; ``bundle`` writes its OCI bundle (pure, but for the runner compiled once).
"""
