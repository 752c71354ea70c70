"""model_importer Lambda function: handler (entry point) → service (the Hub, S3) → logic (pure)."""
