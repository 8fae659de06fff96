//go:build unix

// Package workspace is the workspace host's side of molecule-core: before
// each start of the workspace runtime (molecule-runtime) it writes
// config.yaml and the 0600 .auth_token into the configs dir and builds the
// runtime's environment (interop §0.1, §2.2); it keeps the runtime's output in
// a size-bounded, rotated log file; it checks with the tenant platform that
// the workspace registered, recovers once from a stale token and stops the
// runtime of a removed workspace; and it offers a loopback proxy that adds
// X-Molecule-Org-Id to the runtime's calls to its tenant.
package workspace
