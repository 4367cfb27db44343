"""Least privilege for a GCP deployment: the master's custom role and the bucket's bindings.

The master's service account gets a project-level CUSTOM role holding only the Compute
permissions ``provisioner/gcp.py`` needs to run a pool (Google's documented permissions for
each call it makes), never ``roles/compute.admin`` or a primitive role. Storage access is
granted on the cluster's bucket only (``roles/storage.objectAdmin`` as a bucket IAM member), to
the master (downloads, garbage collection) and to the agents (checkpoints), never project-wide.
The master may launch VMs as the agents' service account and as no other: ``actAs`` is granted
on that one account (``roles/iam.serviceAccountUser`` as a member of it).
"""

from __future__ import annotations

# What each provisioner call needs, per Compute Engine's IAM reference. The provider makes four
# calls: instances.insert, instances.aggregatedList, instances.delete, zoneOperations.get.
MASTER_COMPUTE_PERMISSIONS: tuple[str, ...] = (
    # instances.insert of an agent VM: the VM, its boot disk from the image, its subnetwork,
    # metadata (startup-script), network tags, labels and attached service account.
    "compute.instances.create",
    "compute.disks.create",
    "compute.images.useReadOnly",
    "compute.subnetworks.use",
    "compute.instances.setMetadata",
    "compute.instances.setTags",
    "compute.instances.setLabels",
    "compute.instances.setServiceAccount",
    # instances.get / aggregatedList by label filter, instances.delete.
    "compute.instances.get",
    "compute.instances.list",
    "compute.instances.delete",
    # Following the insert and delete operations without blocking (zoneOperations.get).
    "compute.zoneOperations.get",
)
BUCKET_ROLE = "roles/storage.objectAdmin"
ACT_AS_ROLE = "roles/iam.serviceAccountUser"


def custom_role_id(cluster_id: str, who: str) -> str:
    """``^[a-zA-Z0-9_.]{3,64}$``: hyphens are not allowed in role ids."""
    return f"flotilla_{cluster_id.replace('-', '_')}_{who}"


def service_account_id(cluster_id: str, who: str) -> str:
    """6 to 30 characters: ``fl-<id>-master`` (a cluster id is at most 20)."""
    return f"fl-{cluster_id}-{who}"
