"""Execution: the sandbox that runs model-written step code, and its layers of confinement.

``sandbox`` (the pool of warm workers, ``Sandbox.run``), ``sandbox_worker`` (the worker process),
``isolation`` (namespaces, Landlock, rlimits, the filesystem view), ``seccomp_filter`` and
``cgroups``. The stable public path of ``Sandbox`` is ``pipeline.sandbox``.
"""
