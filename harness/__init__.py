"""The user-side SDK: REST client, experiment-config schema, Core API, trainer, entrypoints."""
