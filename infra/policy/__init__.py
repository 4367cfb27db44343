"""The policy pack every ``det deploy … up`` runs, mandatory: a violation stops the preview
before anything is created.

Layout: ``infra.policy.aws`` and ``infra.policy.gcp`` each define ``POLICIES`` (a list of
``pulumi_policy`` policies for that cloud's resource types); ``infra.policy.pack`` gathers every
cloud's into one pack; ``__main__.py`` with ``PulumiPolicy.yaml`` is the pack as the Pulumi CLI
runs it; ``infra.policy.runner`` applies the same policies to resources recorded under mocks
(the dry run and the tests). A rule only looks at its own cloud's type tokens, so one pack
serves both clouds.
"""
