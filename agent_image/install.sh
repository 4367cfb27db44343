#!/bin/bash
# Bakes Flotilla into an Ubuntu 22.04 image: det-agent for pool instances and det-master (with
# PostgreSQL, for `--db local`) for the master instance `det deploy aws up` / `det deploy gcp up`
# makes. Neither service is enabled: the boot script (EC2 user-data, GCE startup-script) starts
# the one the instance is for. Run as root by Packer (agent.pkr.hcl) on the build instance or VM
# of either source, after it uploaded the wheel and units to /tmp.
#
# Environment (set by agent.pkr.hcl):
#   FLOTILLA_WHEEL             path of the flotilla wheel to install (required)
#   FLOTILLA_UNIT              path of flotilla-agent.service (default /tmp/flotilla-agent.service)
#   FLOTILLA_MASTER_UNIT       path of flotilla-master.service (default /tmp/flotilla-master.service)
#   INSTALL_NVIDIA             "true" to install the NVIDIA datacenter driver (default true)
#   NVIDIA_DRIVER_BRANCH       driver branch, e.g. 535 (default 535)
#   INSTALL_CONTAINER_TOOLKIT  "true" to install Docker and the NVIDIA container toolkit
#                              (default false; tasks run as processes and do not need them)
set -euo pipefail

: "${FLOTILLA_WHEEL:?set FLOTILLA_WHEEL to the path of the flotilla wheel}"
FLOTILLA_UNIT="${FLOTILLA_UNIT:-/tmp/flotilla-agent.service}"
FLOTILLA_MASTER_UNIT="${FLOTILLA_MASTER_UNIT:-/tmp/flotilla-master.service}"
INSTALL_NVIDIA="${INSTALL_NVIDIA:-true}"
NVIDIA_DRIVER_BRANCH="${NVIDIA_DRIVER_BRANCH:-535}"
INSTALL_CONTAINER_TOOLKIT="${INSTALL_CONTAINER_TOOLKIT:-false}"
VENV=/opt/flotilla/venv
export DEBIAN_FRONTEND=noninteractive

# cloud-init on the build instance may still be installing packages; wait for it.
cloud-init status --wait >/dev/null || true

# On GCE the boot script is the `startup-script` metadata value, which the guest agent's
# google_metadata_script_runner runs (Canonical's ubuntu-os-cloud images ship it); an image
# without it would boot VMs whose agent never starts, so refuse to build one.
if grep -qs "Google Compute Engine" /sys/class/dmi/id/product_name; then
  echo "==> GCE: checking the guest agent that runs startup scripts"
  if ! command -v google_metadata_script_runner >/dev/null; then
    echo "install.sh: google_metadata_script_runner is missing: build from an ubuntu-os-cloud" \
      "image (family ubuntu-2204-lts) or install google-guest-agent" >&2
    exit 1
  fi
fi

echo "==> base packages and Python 3.11"
apt-get update
# Flotilla needs Python >= 3.11.4 (tarfile's data filter); Ubuntu 22.04's own python3.11 is
# 3.11.0rc1, so Python comes from the deadsnakes PPA, which follows 3.11's patch releases.
apt-get install -y --no-install-recommends ca-certificates curl gnupg software-properties-common
add-apt-repository -y ppa:deadsnakes/ppa
apt-get update
apt-get install -y --no-install-recommends python3.11 python3.11-venv

echo "==> PostgreSQL (only a master deployed with --db local starts it)"
apt-get install -y --no-install-recommends postgresql
systemctl disable --now postgresql.service

if [ "$INSTALL_NVIDIA" = "true" ]; then
  # DKMS builds the module for the running kernel (linux-aws on EC2, linux-gcp on GCE; both
  # images keep it, nothing here upgrades the kernel). The module is not signed with a key the
  # firmware trusts: a GCE VM with Shielded VM Secure Boot on does not load it. The GCP
  # provider's pool VMs leave Secure Boot off; the master VM of `det deploy gcp up` turns it on
  # and uses no GPU.
  echo "==> NVIDIA driver ${NVIDIA_DRIVER_BRANCH}-server"
  apt-get install -y --no-install-recommends "linux-headers-$(uname -r)" \
    "nvidia-driver-${NVIDIA_DRIVER_BRANCH}-server" "nvidia-utils-${NVIDIA_DRIVER_BRANCH}-server"
fi

if [ "$INSTALL_CONTAINER_TOOLKIT" = "true" ]; then
  echo "==> Docker and the NVIDIA container toolkit"
  keyring=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
  curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --dearmor -o "$keyring"
  curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list \
    | sed "s#deb https://#deb [signed-by=$keyring] https://#g" \
    > /etc/apt/sources.list.d/nvidia-container-toolkit.list
  apt-get update
  apt-get install -y --no-install-recommends docker.io nvidia-container-toolkit
  nvidia-ctk runtime configure --runtime=docker
  systemctl enable docker
fi

echo "==> flotilla master and agent into $VENV"
python3.11 -m venv "$VENV"
"$VENV/bin/pip" install --no-cache-dir --upgrade pip
"$VENV/bin/pip" install --no-cache-dir "flotilla[master,agent] @ file://${FLOTILLA_WHEEL}"
ln -sf "$VENV/bin/det-agent" /usr/local/bin/det-agent
ln -sf "$VENV/bin/det-master" /usr/local/bin/det-master
"$VENV/bin/det-agent" --version

echo "==> systemd units (one enabled at boot by user-data, once its config exists)"
install -m 0644 "$FLOTILLA_UNIT" /etc/systemd/system/flotilla-agent.service
install -m 0644 "$FLOTILLA_MASTER_UNIT" /etc/systemd/system/flotilla-master.service
install -d -m 0700 /etc/flotilla
systemctl daemon-reload

# Background apt runs at boot hold the dpkg lock (a startup_script's apt-get would fail) and may
# upgrade the driver under a running job; instances are replaced, not patched in place.
systemctl disable --now apt-daily.timer apt-daily-upgrade.timer unattended-upgrades.service || true

echo "==> cleaning up"
apt-get clean
rm -rf /var/lib/apt/lists/* "$FLOTILLA_WHEEL" "$FLOTILLA_UNIT" "$FLOTILLA_MASTER_UNIT"
cloud-init clean --logs
