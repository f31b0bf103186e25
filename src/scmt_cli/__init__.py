"""scmt: migrate running VMware vSphere VMs to KVM with little downtime."""

__version__ = "0.1.0"
