package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

// BenchmarkHeartbeat measures heartbeats over HTTP on loopback against a
// real server on SQLite, with realistic bodies for 2,000 hosts.
func BenchmarkHeartbeat(b *testing.B) {
	f := newFixture(b)
	f.srv.cfg.HostRate, f.srv.cfg.HostBurst = 1e9, 1e9
	const hosts = 2000
	type hb struct {
		url, auth string
		body      []byte
	}
	var hbs []hb
	tok := f.enrollToken()
	for i := range hosts {
		r, err := f.agent.Register(context.Background(), api.Proof{EnrollmentToken: secretOf(tok), MachineID: "m" + strconv.Itoa(i)},
			secretOf(""), api.RegisterRequest{BootID: "b"})
		if err != nil {
			b.Fatal(err)
		}
		body, _ := json.Marshal(report("tun-" + strconv.Itoa(i)))
		hbs = append(hbs, hb{f.http.URL + "/v1/hosts/" + r.HostID + "/heartbeat", "Bearer " + r.HostToken.Reveal(), body})
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 256}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	b.SetParallelism(16)
	b.ResetTimer()
	var n int64
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			h := hbs[i%hosts]
			i += 7
			req, _ := http.NewRequest(http.MethodPost, h.url, bytes.NewReader(h.body))
			req.Header.Set("Authorization", h.auth)
			resp, err := hc.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	_ = n
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "heartbeats/s")
}
