"""`habitloop bench`: the runner (`runner`), one module per subject (compose, route, serve, instances) and the data."""
