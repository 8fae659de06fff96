package secretstore

import (
	"slices"
	"testing"
	"time"
)

func TestJitterBounds(t *testing.T) {
	tests := []struct {
		d    time.Duration
		f    float64
		lo   time.Duration
		hi   time.Duration
		name string
	}{
		{5 * time.Minute, 0.2, 4 * time.Minute, 6 * time.Minute, "default"},
		{time.Second, 0, time.Second, time.Second, "none"},
		{time.Second, 1, 0, 2 * time.Second, "full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 1000 {
				if got := jitter(tt.d, tt.f); got < tt.lo || got > tt.hi {
					t.Fatalf("jitter(%v, %v) = %v, want within [%v, %v]", tt.d, tt.f, got, tt.lo, tt.hi)
				}
			}
		})
	}
}

func TestDiff(t *testing.T) {
	old := map[string]Secret{"a": New("1"), "b": New("2"), "c": New("3")}
	cur := map[string]Secret{"a": New("1"), "b": New("20"), "d": New("4")}
	if got, want := diff(old, cur), []string{"b", "c", "d"}; !slices.Equal(got, want) {
		t.Errorf("diff = %v, want %v", got, want)
	}
	if got := diff(cur, cur); len(got) != 0 {
		t.Errorf("diff of equal maps = %v, want none", got)
	}
}

func TestNewStoreDefaults(t *testing.T) {
	tests := []struct {
		in   StoreOptions
		want StoreOptions
	}{
		{StoreOptions{}, StoreOptions{Refresh: DefaultRefresh, Jitter: DefaultJitter, BootBackoff: DefaultBootBackoff, MaxBootBackoff: DefaultMaxBootBackoff}},
		{StoreOptions{Refresh: time.Minute, Jitter: -1, BootBackoff: 2 * time.Minute}, StoreOptions{Refresh: time.Minute, Jitter: 0, BootBackoff: 2 * time.Minute, MaxBootBackoff: 2 * time.Minute}},
		{StoreOptions{Jitter: 3}, StoreOptions{Refresh: DefaultRefresh, Jitter: 1, BootBackoff: DefaultBootBackoff, MaxBootBackoff: DefaultMaxBootBackoff}},
	}
	for _, tt := range tests {
		o := NewStore(NewFile("x"), tt.in).opts
		got := [4]any{o.Refresh, o.Jitter, o.BootBackoff, o.MaxBootBackoff}
		if want := [4]any{tt.want.Refresh, tt.want.Jitter, tt.want.BootBackoff, tt.want.MaxBootBackoff}; got != want {
			t.Errorf("NewStore(%+v) refresh, jitter, backoffs = %v, want %v", tt.in, got, want)
		}
	}
}
