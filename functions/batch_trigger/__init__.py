"""batch_trigger Lambda function: handler (entry point) → service (AWS calls) → logic (pure)."""
