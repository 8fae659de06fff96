// Package drills holds the control plane's fault drills: tests that run the
// real molecule-controlplane binary (and PostgreSQL, tmpfs, network
// namespaces, the real agent) through the faults a fleet meets — the
// control plane down under load, several replicas losing one, mass silence,
// a full disk, a database restart, a partitioned host — and check that no
// host is wrongly marked offline, nothing is lost and nothing is corrupted.
//
// The numbers use a 10 s heartbeat interval and a 60 s outage; the
// drills scale time down tenfold (1 s interval, 6 s outage, 500 ms grace)
// and keep the ratios, so that they run in `make test` on two cores.
package drills
