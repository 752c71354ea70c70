"""Code of the stack's Lambda functions: one package per function, shipped as that package (stacks/code_assets.py)."""
