"""The offline emulation: AWS (moto) with the real functions, a local transform runner, the serving stack on this
machine, tiny random models and the demo. Runs from a checkout (it imports ``stacks`` and ``functions``); the client
``zstc`` never imports it at module level."""
