"""Alembic migrations of the store, shipped inside the package (a package so installs include them)."""
