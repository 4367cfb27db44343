# The Flotilla image, as an AWS AMI (source amazon-ebs.agent) and a GCE image (source
# googlecompute.agent): Ubuntu 22.04, Python 3.11, this repository's wheel with the master and
# agent extras, the flotilla-agent and flotilla-master systemd units, PostgreSQL (disabled), and
# (optionally) the NVIDIA driver and container toolkit. Pool instances run the agent; the master
# instance of `det deploy aws up` / `det deploy gcp up` runs the master. Both sources run the
# same install.sh. See README.md beside this file.
#
#   pip wheel --no-deps -w dist .
#   packer init agent_image/
#   packer build -only=amazon-ebs.agent -var wheel=dist/flotilla-0.1.0-py3-none-any.whl agent_image/
#   packer build -only=googlecompute.agent -var project_id=my-project \
#     -var wheel=dist/flotilla-0.1.0-py3-none-any.whl agent_image/

packer {
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
    googlecompute = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/googlecompute"
    }
  }
}

variable "wheel" {
  type        = string
  description = "Path of the flotilla wheel to install (pip wheel --no-deps -w dist .)."
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "build_instance_type" {
  type        = string
  default     = "c5.xlarge"
  description = "Instance that builds the image; it needs no GPU to install the driver."
}

variable "subnet_id" {
  type        = string
  default     = null
  description = "Subnet for the build instance (default: the default VPC)."
}

variable "root_volume_size" {
  type        = number
  default     = 40
  description = "GiB of the image's root volume (AMI) or boot disk (GCE); pools may launch with a larger one."
}

variable "install_nvidia" {
  type        = bool
  default     = true
  description = "Install the NVIDIA datacenter driver (for GPU instance types)."
}

variable "nvidia_driver_branch" {
  type        = string
  default     = "535"
  description = "Driver branch: Ubuntu's nvidia-driver-<branch>-server package."
}

variable "install_container_toolkit" {
  type        = bool
  default     = false
  description = "Also install Docker and the NVIDIA container toolkit (tasks do not need them)."
}

variable "ami_name_prefix" {
  type    = string
  default = "flotilla-agent"
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Extra tags on the AMI and its snapshot."
}

# GCE (googlecompute.agent) only.
variable "project_id" {
  type        = string
  default     = null
  description = "GCP project that builds and holds the GCE image (required for googlecompute.agent)."
}

variable "zone" {
  type        = string
  default     = "us-central1-a"
  description = "GCE zone of the build VM."
}

variable "gce_machine_type" {
  type        = string
  default     = "e2-standard-4"
  description = "GCE machine type of the build VM; it needs no GPU to install the driver."
}

variable "gce_subnetwork" {
  type        = string
  default     = null
  description = "Subnetwork of the build VM (default: the project's default network)."
}

variable "image_family" {
  type        = string
  default     = "flotilla-agent"
  description = "GCE image family; `det deploy gcp up` boots the family's newest image by default."
}

variable "labels" {
  type        = map(string)
  default     = {}
  description = "Extra labels on the GCE image (lowercase letters, digits, - and _)."
}

locals {
  stamp      = formatdate("YYYYMMDD-hhmmss", timestamp())
  wheel_name = basename(var.wheel)
  nvidia     = var.install_nvidia ? var.nvidia_driver_branch : "none"
  image_tags = merge(var.tags, {
    "flotilla:image"  = "agent"
    # Holds det-master too: `det deploy aws up` looks images up by both tags.
    "flotilla:master" = "yes"
    "flotilla:wheel"  = local.wheel_name
    "flotilla:nvidia" = local.nvidia
    # Filled in by the amazon plugin with the id source_ami_filter found.
    "flotilla:source-ami" = "{{ .SourceAMI }}"
  })
  # GCE labels allow only lowercase letters, digits, - and _ (values up to 63 characters),
  # so the AMI's tags are spelled with - and the wheel's file name is folded into that set.
  image_labels = merge(var.labels, {
    "flotilla-image"  = "agent"
    "flotilla-master" = "yes"
    "flotilla-wheel"  = substr(regex_replace(lower(local.wheel_name), "[^a-z0-9_-]", "-"), 0, 63)
    "flotilla-nvidia" = local.nvidia
  })
}

source "amazon-ebs" "agent" {
  region = var.region
  # A filter in the source rather than an amazon-ami data source: Packer evaluates data
  # sources even for builds -only leaves out, which would make the GCE build need AWS
  # credentials (hashicorp/packer#12434).
  source_ami_filter {
    owners      = ["099720109477"] # Canonical
    most_recent = true
    filters = {
      name                = "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
  }
  instance_type = var.build_instance_type
  subnet_id     = var.subnet_id
  ssh_username  = "ubuntu"
  ami_name      = "${var.ami_name_prefix}-${local.stamp}"
  # Instances launched from the image default to IMDSv2 only (the provider also asks for it).
  imds_support = "v2.0"

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = var.root_volume_size
    volume_type           = "gp3"
    delete_on_termination = true
  }

  tags          = merge(local.image_tags, { Name = "${var.ami_name_prefix}-${local.stamp}" })
  snapshot_tags = local.image_tags
  run_tags      = { Name = "packer-${var.ami_name_prefix}" }
}

source "googlecompute" "agent" {
  project_id              = var.project_id
  zone                    = var.zone
  machine_type            = var.gce_machine_type
  subnetwork              = var.gce_subnetwork
  source_image_family     = "ubuntu-2204-lts"
  source_image_project_id = ["ubuntu-os-cloud"]
  ssh_username            = "packer"
  disk_size               = var.root_volume_size
  disk_type               = "pd-balanced"
  image_name              = "${var.image_family}-${local.stamp}"
  image_family            = var.image_family
  image_description       = "Flotilla det-agent and det-master (${local.wheel_name}) on Ubuntu 22.04"
  image_labels            = local.image_labels
  labels                  = { "packer-build" = var.image_family }
}

build {
  sources = ["source.amazon-ebs.agent", "source.googlecompute.agent"]

  provisioner "file" {
    source      = var.wheel
    destination = "/tmp/${local.wheel_name}"
  }

  provisioner "file" {
    source      = "${path.root}/flotilla-agent.service"
    destination = "/tmp/flotilla-agent.service"
  }

  provisioner "file" {
    source      = "${path.root}/flotilla-master.service"
    destination = "/tmp/flotilla-master.service"
  }

  provisioner "shell" {
    script          = "${path.root}/install.sh"
    execute_command = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E bash '{{ .Path }}'"
    environment_vars = [
      "FLOTILLA_WHEEL=/tmp/${local.wheel_name}",
      "FLOTILLA_UNIT=/tmp/flotilla-agent.service",
      "FLOTILLA_MASTER_UNIT=/tmp/flotilla-master.service",
      "INSTALL_NVIDIA=${var.install_nvidia}",
      "NVIDIA_DRIVER_BRANCH=${var.nvidia_driver_branch}",
      "INSTALL_CONTAINER_TOOLKIT=${var.install_container_toolkit}",
    ]
  }

  post-processor "manifest" {
    output     = "agent-image-manifest.json"
    strip_path = true
  }
}
