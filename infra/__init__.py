"""Pulumi programs behind ``det deploy aws|gcp``: a cloud-neutral core (``infra.common``), the
policy pack every ``up`` runs (``infra.policy``), and one package per cloud."""
