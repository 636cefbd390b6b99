"""Numeric engines and nothing else (see ../shared/architecture.md): arrays and hardware
configurations in, arrays or cycle counts out. No import of `flexiq_search`."""
