//go:build unix

package secretstore

import (
	"slices"
	"testing"
	"time"
)

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
