"""model_importer Lambda function: handler (entry point) → service (AWS calls) → logic (pure)."""
