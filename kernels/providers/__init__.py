"""Provider adapters: one module per implementation (see ``normbench.registry.PROVIDERS``)."""
