"""Model integrations for transformers 5.x (DESIGN.md section 4)."""
