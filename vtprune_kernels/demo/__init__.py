"""The ``vtprune demo`` and ``vtprune bench`` commands: an embedded tiny LLaVA-style model, a
bundled image drawn on the fly, a local-checkpoint loader, measurements, tables and pictures.

Nothing here downloads anything."""
