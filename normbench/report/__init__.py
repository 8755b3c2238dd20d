"""Renderers: rich tables, Markdown, JSON/CSV and plots. Pure: no torch."""
