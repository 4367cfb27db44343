"""The AWS deployment: settings, network, IAM, the master's config, the program, the dry
run, preflight checks and the agents' teardown."""
