"""The offline emulation: AWS (moto) with the real functions, a local transform runner, the serving stack on this
machine, tiny random models and the demo. Runs from a checkout (it imports ``stacks`` and ``functions``); it imports
the client's modules (never ``zstc.cli``), and the client imports it only inside ``zstc demo``, ``zstc serve`` and
``Classifier.local``."""
