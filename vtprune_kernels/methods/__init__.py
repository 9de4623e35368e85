"""Pruning methods: scores in, keep mask out (DESIGN.md section 3)."""
