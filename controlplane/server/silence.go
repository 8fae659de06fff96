package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// liveMetrics are the liveness guard's metrics.
type liveMetrics struct {
	shed        prometheus.Counter
	leader      prometheus.Gauge
	leaderTaken prometheus.Counter
	mass        prometheus.Gauge
	silent      prometheus.Gauge
}

func newLiveMetrics(reg *prometheus.Registry) *liveMetrics {
	m := &liveMetrics{
		shed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "molecule_cp_shed_total", Help: "Agent requests refused with 429 because the control plane was over its request budget.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "molecule_cp_sweeper_leader", Help: "1 while this replica runs the liveness sweeper.",
		}),
		leaderTaken: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "molecule_cp_sweeper_lock_acquired_total", Help: "Times this replica took the sweeper lock.",
		}),
		mass: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "molecule_cp_mass_silence", Help: "1 while too many hosts are silent at once and nobody is marked offline.",
		}),
		silent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "molecule_cp_silent_hosts", Help: "Online hosts that missed a heartbeat, at the last sweep.",
		}),
	}
	reg.MustRegister(m.shed, m.leader, m.leaderTaken, m.mass, m.silent)
	return m
}

// quietFrom is when silence starts counting for a host not heard since
// the server started: so that nobody is offline before RestartHold passes.
func (s *Server) quietFrom() time.Time {
	return s.started.Add(s.cfg.RestartHold - s.offlineAfter())
}

// suspectAfter is how long a host may be quiet before it counts as silent
// for the mass-silence guard: halfway between the most a live host can be
// quiet (1.1 intervals of jitter, plus lag: a flush window when judged from
// shared storage) and the least every host that fell silent together has
// been quiet when the first of them is overdue (1.9 intervals + grace).
func (s *Server) suspectAfter(lag time.Duration) time.Duration {
	return (3*s.cfg.Interval + s.cfg.Grace + lag) / 2
}

// massSilence reports whether silent of online hosts is a mass silence,
// logging when one starts and ends.
func (s *Server) massSilence(online, silent int) bool {
	s.lm.silent.Set(float64(silent))
	share := s.cfg.MassSilenceShare
	mass := share < 1 && silent >= s.cfg.MassSilenceMin && float64(silent) > share*float64(online)
	if mass != s.inMass.Swap(mass) {
		if mass {
			s.log.Warn("mass silence: too many hosts silent at once; assuming a control-plane fault and marking nobody offline",
				"silent", silent, "online", online, "share", share)
		} else {
			s.log.Info("mass silence over: liveness judged again", "silent", silent, "online", online)
		}
	}
	if mass {
		s.lm.mass.Set(1)
	} else {
		s.lm.mass.Set(0)
	}
	return mass
}
