"""Runs: plan, execution on Ray, markers, resume, status, preview, export."""
