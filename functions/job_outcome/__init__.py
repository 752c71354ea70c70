"""job_outcome Lambda function: handler (entry point) → service (AWS calls) → logic (pure)."""
