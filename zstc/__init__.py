"""zstc: command line and local tooling of the zero-shot classification app on SageMaker."""
