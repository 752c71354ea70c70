"""The batch path's contract: what the stack, both batch functions, ``zstc``, the offline emulation and the tests
must agree on, each declared once. Standard library only: shipped to both functions as a Lambda layer
(``zstc_contract`` under ``/opt/python``, see ``stacks/code_assets.py``) and with the ``zstc`` client.

- :mod:`zstc_contract.layout`: the bucket's prefixes; input → output / status-record / manifest key names.
- :mod:`zstc_contract.uri`: ``s3://bucket/key`` URIs (build, split).
- :mod:`zstc_contract.manifest`: the SageMaker manifest the trigger writes per job (encode, decode).
- :mod:`zstc_contract.jobs`: transform-job names of a stack (derive, recognise) and the terminal job states.
- :mod:`zstc_contract.status`: the status record per input file (one writer, one reader).
- :mod:`zstc_contract.settings`: the functions' environment-variable names and their typed readers.
- :mod:`zstc_contract.backoff`: the trigger's deferral backoff and the DLQ's ``maxReceiveCount`` from it.
"""
