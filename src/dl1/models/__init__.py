"""Neural-network modules and their builders (no optimisers, no printing)."""
