//go:build unix

// Package boottest holds the boot test: a Debian rootfs (debootstrap,
// cached) with the molecule-agent .deb installed boots under
// systemd-nspawn --boot on its own network namespace, runs the rendered
// user-data, and checks what systemd and the agent do: active, restarted
// after kill -9, stopped gracefully. It needs root, systemd-nspawn and
// debootstrap (Debian packages systemd-container and debootstrap).
package boottest
