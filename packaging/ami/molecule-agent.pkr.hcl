# The molecule host AMI: Ubuntu 24.04 with Docker, the molecule-agent .deb
# and the platform images pre-pulled, so a boot installs nothing. Nothing
# host-specific is baked: no agent.yaml, no state, no cloud-init state.
#
#   make deb
#   packer init packaging/ami
#   packer build -var deb=dist/molecule-agent_<version>_amd64.deb packaging/ami
#
# Formatted by hand in `packer fmt` style (packer is not installed where
# this was written); run `packer fmt -check packaging/ami` in CI to keep it so.

packer {
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}

variable "region" {
  type    = string
  default = "us-east-2"
}

variable "instance_type" {
  type    = string
  default = "t3.small"
}

variable "deb" {
  type        = string
  description = "Path of the molecule-agent .deb built by `make deb`."
}

variable "ami_name_prefix" {
  type    = string
  default = "molecule-host"
}

variable "platform_images" {
  type        = list(string)
  description = "Images pre-pulled into the AMI; pin them by digest (image@sha256:...)."
  default = [
    "postgres:16",
    "redis:7",
    "ghcr.io/molecule-ai/platform-tenant:latest",
  ]
}

variable "registry_user" {
  type        = string
  default     = ""
  description = "User for ghcr.io, when the platform image is private."
}

variable "registry_token" {
  type        = string
  default     = ""
  sensitive   = true
  description = "Token for ghcr.io; used at build time only, logged out before the snapshot."
}

locals {
  stamp = formatdate("YYYYMMDDhhmmss", timestamp())
}

source "amazon-ebs" "ubuntu" {
  region        = var.region
  instance_type = var.instance_type
  ami_name      = "${var.ami_name_prefix}-${local.stamp}"
  ssh_username  = "ubuntu"

  source_ami_filter {
    filters = {
      name                = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = ["099720109477"] # Canonical
    most_recent = true
  }

  # The build instance: IMDSv2 only, hop limit 1 (containers cannot reach
  # IMDS through the Docker bridge), tags readable by bootstrap.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }

  # Instances launched from the AMI default to IMDSv2 only as well; the
  # launch template still sets hop limit 1 and metadata tags.
  imds_support = "v2.0"

  tags = {
    Name    = "${var.ami_name_prefix}-${local.stamp}"
    Role    = "molecule-host"
    Ubuntu  = "24.04"
    BuiltBy = "packer"
  }
}

build {
  sources = ["source.amazon-ebs.ubuntu"]

  provisioner "file" {
    source      = var.deb
    destination = "/tmp/molecule-agent.deb"
  }

  # sh -eu, never -x: nothing here may print the registry token.
  provisioner "shell" {
    execute_command = "sudo -E sh -eu '{{ .Path }}'"
    environment_vars = [
      "DEBIAN_FRONTEND=noninteractive",
      "REGISTRY_USER=${var.registry_user}",
      "REGISTRY_TOKEN=${var.registry_token}",
    ]
    inline = [
      "cloud-init status --wait >/dev/null",
      "apt-get update -q",
      "apt-get install -y -q docker.io ca-certificates",
      "systemctl enable docker.service",
      "systemctl start docker.service",
      "apt-get install -y -q /tmp/molecule-agent.deb",
      "if [ -n \"$REGISTRY_TOKEN\" ]; then printf '%s' \"$REGISTRY_TOKEN\" | docker login ghcr.io -u \"$REGISTRY_USER\" --password-stdin >/dev/null; fi",
      "for image in ${join(" ", var.platform_images)}; do docker pull -q \"$image\"; done",
      "docker logout ghcr.io >/dev/null 2>&1 || true",
      "rm -f /root/.docker/config.json /tmp/molecule-agent.deb",
      "molecule-agent version",
      "cloudflared --version",
      "if systemctl is-enabled --quiet molecule-agent.service; then echo 'molecule-agent must not be enabled in the AMI'; exit 1; fi",
    ]
  }

  # Leave no host identity or boot state behind: the first boot of every
  # instance runs cloud-init (and its user-data) afresh.
  provisioner "shell" {
    execute_command = "sudo sh -eu '{{ .Path }}'"
    inline = [
      "rm -rf /etc/molecule-agent/agent.yaml /var/lib/molecule-agent/* /run/molecule-agent",
      "apt-get clean",
      "rm -rf /var/lib/apt/lists/*",
      "cloud-init clean --logs --seed --machine-id",
      "rm -f /var/lib/dbus/machine-id",
      "journalctl --rotate >/dev/null && journalctl --vacuum-time=1s >/dev/null",
    ]
  }
}
