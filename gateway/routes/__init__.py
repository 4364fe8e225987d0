"""HTTP handlers, one module per resource of api.md."""
