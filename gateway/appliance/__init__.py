"""Running tlsgw on a bridge appliance: host checks (`tlsgw doctor`), the bridge's
persistent network configuration (`tlsgw appliance init`), and the file side of install
and uninstall (scripts/install-appliance.sh, scripts/uninstall-appliance.sh)."""
