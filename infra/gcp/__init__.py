"""``det deploy gcp``: the Pulumi program (pulumi-gcp) of a Flotilla cluster on GCP."""
