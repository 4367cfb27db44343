# The Flotilla AMI: Ubuntu 22.04, Python 3.11, this repository's wheel with the master and agent
# extras, the flotilla-agent and flotilla-master systemd units, PostgreSQL (disabled), and
# (optionally) the NVIDIA driver and container toolkit. Pool instances run the agent; the master
# instance of `det deploy aws up` runs the master. See README.md beside this file.
#
#   pip wheel --no-deps -w dist .
#   packer init agent_image/agent.pkr.hcl
#   packer build -var wheel=dist/flotilla-0.1.0-py3-none-any.whl agent_image/agent.pkr.hcl

packer {
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
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
  description = "GiB of the image's root volume; pools may launch with a larger one."
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

data "amazon-ami" "ubuntu" {
  region      = var.region
  owners      = ["099720109477"] # Canonical
  most_recent = true
  filters = {
    name                = "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*"
    root-device-type    = "ebs"
    virtualization-type = "hvm"
  }
}

locals {
  stamp      = formatdate("YYYYMMDD-hhmmss", timestamp())
  wheel_name = basename(var.wheel)
  image_tags = merge(var.tags, {
    "flotilla:image"      = "agent"
    # Holds det-master too: `det deploy aws up` looks images up by both tags.
    "flotilla:master"     = "yes"
    "flotilla:wheel"      = local.wheel_name
    "flotilla:nvidia"     = var.install_nvidia ? var.nvidia_driver_branch : "none"
    "flotilla:source-ami" = data.amazon-ami.ubuntu.id
  })
}

source "amazon-ebs" "agent" {
  region        = var.region
  source_ami    = data.amazon-ami.ubuntu.id
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

build {
  sources = ["source.amazon-ebs.agent"]

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
