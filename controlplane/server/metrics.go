package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

type metrics struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	heartbeats    prometheus.Counter
	rateLimited   prometheus.Counter
	offline       prometheus.Counter
	flushes       prometheus.Counter
	flushErrors   prometheus.Counter
	flushDuration prometheus.Histogram
	flushHosts    prometheus.Gauge
}

func newMetrics(reg *prometheus.Registry, s *Server) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "molecule_cp_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "molecule_cp_request_duration_seconds", Help: "HTTP request handling time by route.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"route"}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "molecule_cp_heartbeats_total", Help: "Heartbeats accepted.",
		}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "molecule_cp_rate_limited_total", Help: "Requests refused with 429.",
		}),
		offline: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "molecule_cp_hosts_marked_offline_total", Help: "Online hosts declared offline by the sweeper.",
		}),
		flushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "molecule_cp_flushes_total", Help: "Flush windows that wrote live state.",
		}),
		flushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "molecule_cp_flush_errors_total", Help: "Flushes that failed and were retried.",
		}),
		flushDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "molecule_cp_flush_duration_seconds", Help: "Time to write one flush window.",
			Buckets: prometheus.ExponentialBuckets(.001, 2, 14),
		}),
		flushHosts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "molecule_cp_flush_hosts", Help: "Hosts written by the last flush.",
		}),
	}
	st := s.store
	reg.MustRegister(m.requests, m.duration, m.heartbeats, m.rateLimited, m.offline, m.flushes, m.flushErrors, m.flushDuration, m.flushHosts,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "molecule_cp_store_write_transactions_total",
			Help: "Committed store write transactions (flushes, registrations, admin writes).",
		}, func() float64 { return float64(st.Stats().WriteTx) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "molecule_cp_flush_window_seconds", Help: "Configured flush window.",
		}, func() float64 { return s.cfg.FlushWindow.Seconds() }),
	)
	for _, status := range []string{store.StatusOnline, store.StatusOffline, store.StatusRemoved} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "molecule_cp_hosts", Help: "Hosts by live status.", ConstLabels: prometheus.Labels{"status": status},
		}, func() float64 { return float64(s.countStatus(status)) }))
	}
	return m
}

func (s *Server) countStatus(status string) int { return s.lv.count(status) }
