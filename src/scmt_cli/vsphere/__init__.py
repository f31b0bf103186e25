"""vsphere layer."""
