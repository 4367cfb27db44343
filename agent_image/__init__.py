"""The agent image: Packer template, install script, systemd unit and the user-data template the
provisioner renders (shipped as package data so an installed master can render it)."""
