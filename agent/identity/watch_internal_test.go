//go:build unix

package identity

import (
	"testing"
	"time"
)

func TestParseSpot(t *testing.T) {
	tests := []struct {
		in   string
		want Notice
	}{
		{`{"action": "terminate", "time": "2017-09-18T08:22:00Z"}`, Notice{SpotInterruption, "terminate", time.Date(2017, 9, 18, 8, 22, 0, 0, time.UTC)}},
		{`{"action": "hibernate"}`, Notice{SpotInterruption, "hibernate", time.Time{}}},
		{`garbage`, Notice{SpotInterruption, "unknown", time.Time{}}},
		{`{"action": "stop", "time": "soon"}`, Notice{SpotInterruption, "stop", time.Time{}}},
	}
	for _, tt := range tests {
		if got := parseSpot(tt.in); !got.Time.Equal(tt.want.Time) || got.Kind != tt.want.Kind || got.Action != tt.want.Action {
			t.Errorf("parseSpot(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func FuzzParseSpot(f *testing.F) {
	f.Add(`{"action": "terminate", "time": "2017-09-18T08:22:00Z"}`)
	f.Add(`{"action": 1}`)
	f.Fuzz(func(t *testing.T, s string) {
		if n := parseSpot(s); n.Kind != SpotInterruption || n.Action == "" {
			t.Fatalf("parseSpot(%q) = %+v: every body is a spot notice with an action", s, n)
		}
	})
}
