"""The pack as the Pulumi CLI runs it (``pulumi preview --policy-pack infra/policy``)."""

from infra.policy.pack import policy_pack

policy_pack()
