"""Figures and reports computed from run folders (Agg backend only)."""
