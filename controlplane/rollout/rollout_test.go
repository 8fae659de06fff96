package rollout

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

const (
	imgOld = "127.0.0.1:5000/platform@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	imgNew = "127.0.0.1:5000/platform@sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

var t0 = time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)

func TestValidateImages(t *testing.T) {
	for _, tc := range []struct {
		name   string
		images map[string]string
		errHas string
	}{
		{"pinned", map[string]string{"platform": imgNew}, ""},
		{"tag", map[string]string{"platform": "ghcr.io/x/platform:latest"}, "images.platform"},
		{"tag and digest", map[string]string{"platform": "ghcr.io/x/p:1@sha256:" + strings.Repeat("a", 64)}, "never a tag"},
		{"short digest", map[string]string{"platform": "x@sha256:abc"}, "images.platform"},
		{"empty", map[string]string{}, "at least one"},
		{"bad unit", map[string]string{"a b": imgNew}, "unit name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateImages(tc.images)
			if tc.errHas == "" && err != nil || tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)) {
				t.Errorf("ValidateImages(%v) = %v, want error containing %q", tc.images, err, tc.errHas)
			}
		})
	}
}

func FuzzValidateImages(f *testing.F) {
	f.Add("platform", imgNew)
	f.Add("x", "repo:tag")
	f.Add("", "@sha256:")
	f.Fuzz(func(t *testing.T, unit, ref string) {
		if ValidateImages(map[string]string{unit: ref}) == nil && !strings.Contains(ref, "@sha256:") {
			t.Errorf("accepted %q without a digest", ref)
		}
	})
}

func TestPlan(t *testing.T) {
	hosts := func(n int) []string {
		var hs []string
		for i := range n {
			hs = append(hs, string(rune('a'+i)))
		}
		return hs
	}
	for _, tc := range []struct {
		name  string
		hosts int
		p     Policy
		want  []int
	}{
		{"three hosts, canary then 25%", 3, Policy{Canary: 1, BatchPercent: 25}, []int{1, 1, 1}},
		{"ten hosts", 10, Policy{Canary: 1, BatchPercent: 25}, []int{1, 3, 3, 3}},
		{"all at once", 4, Policy{Canary: 0, BatchPercent: 100}, []int{4}},
		{"canary larger than fleet", 2, Policy{Canary: 5, BatchPercent: 50}, []int{2}},
		{"no hosts", 0, Policy{Canary: 1, BatchPercent: 25}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []int
			seen := 0
			for _, w := range Plan(hosts(tc.hosts), tc.p) {
				got = append(got, len(w.Hosts))
				seen += len(w.Hosts)
			}
			if !slices.Equal(got, tc.want) || seen != tc.hosts {
				t.Errorf("wave sizes = %v, want %v", got, tc.want)
			}
		})
	}
}

// fleet is the hosts' latest reports, for Step.
type fleet map[string]*api.HeartbeatRequest

func (f fleet) get(id string) *api.HeartbeatRequest { return f[id] }

func (f fleet) run(id, img, state string) {
	f[id] = &api.HeartbeatRequest{Units: []api.UnitStatus{{Name: "platform", State: state, Image: img, ImageDigest: digestOf(img)}}}
}

func newRollout(hosts ...string) *Rollout {
	p := Policy{Canary: 1, BatchPercent: 25, BakeMS: 1000, WaveTimeoutMS: 10000}
	return &Rollout{Channel: "stable", State: StateRolling, From: map[string]string{"platform": imgOld}, FromRevision: 1,
		To: map[string]string{"platform": imgNew}, Revision: 2, Policy: p, Waves: Plan(hosts, p)}
}

func kinds(ts []Transition) []string {
	var out []string
	for _, t := range ts {
		if t.Kind != "progress" && t.Kind != "wave_ready" {
			out = append(out, t.Kind)
		}
	}
	return out
}

func TestStepCompletes(t *testing.T) {
	r := newRollout("h1", "h2", "h3")
	f := fleet{}
	for _, h := range []string{"h1", "h2", "h3"} {
		f.run(h, imgOld, api.UnitReady)
	}
	want := func(host string, rev int64) {
		t.Helper()
		if _, ds := Desired(r, host); ds.Revision != rev {
			t.Errorf("desired revision of %s = %d, want %d", host, ds.Revision, rev)
		}
	}
	if got := kinds(Step(r, t0, f.get)); !slices.Equal(got, []string{"wave_started"}) {
		t.Fatalf("first step = %v, want the canary started", got)
	}
	want("h1", 2)
	want("h2", 1)
	want("h3", 1)
	// Not ready yet: nothing moves, however often we look.
	Step(r, t0.Add(5*time.Second), f.get)
	want("h2", 1)
	f.run("h1", imgNew, api.UnitReady)
	Step(r, t0.Add(6*time.Second), f.get)
	if got := kinds(Step(r, t0.Add(6500*time.Millisecond), f.get)); len(got) != 0 {
		t.Errorf("during bake: %v, want nothing", got)
	}
	if got := kinds(Step(r, t0.Add(7*time.Second), f.get)); !slices.Equal(got, []string{"wave_started"}) {
		t.Fatalf("after bake = %v, want the next wave started", got)
	}
	want("h2", 2)
	want("h3", 1)
	f.run("h2", imgNew, api.UnitReady)
	Step(r, t0.Add(8*time.Second), f.get)
	Step(r, t0.Add(9*time.Second), f.get)
	want("h3", 2)
	f.run("h3", imgNew, api.UnitReady)
	Step(r, t0.Add(10*time.Second), f.get)
	if got := kinds(Step(r, t0.Add(11*time.Second), f.get)); !slices.Equal(got, []string{"completed"}) || r.State != StateCompleted {
		t.Fatalf("last step = %v (state %s), want completed", got, r.State)
	}
	want("h-new", 2)
}

func TestStepHalts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		report func(f fleet)
		at     time.Duration
		reason string
	}{
		{"canary rolled back", func(f fleet) {
			f.run("h1", imgOld, api.UnitReady)
			f["h1"].Updates = []api.UpdateStatus{{Unit: "platform", Digest: imgNew, Phase: "rolled_back", Detail: "not ready within 60s"}}
		}, time.Second, "host h1: unit platform rolled back"},
		{"canary never ready", func(f fleet) { f.run("h1", imgNew, api.UnitStarting) }, 11 * time.Second, "not ready on the new digest within 10s"},
		{"canary silent", func(fleet) {}, 11 * time.Second, "hosts h1 not ready"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRollout("h1", "h2", "h3")
			f := fleet{}
			Step(r, t0, f.get)
			tc.report(f)
			ts := Step(r, t0.Add(tc.at), f.get)
			if r.State != StateHalted || !strings.Contains(r.Reason, tc.reason) {
				t.Fatalf("state %s reason %q, want halted with %q", r.State, r.Reason, tc.reason)
			}
			if got := kinds(ts); !slices.Equal(got, []string{"halted"}) || ts[len(ts)-1].HostID != "h1" {
				t.Errorf("transitions = %+v, want halted naming h1", ts)
			}
			for _, h := range []string{"h2", "h3"} {
				if _, ds := Desired(r, h); ds.Images["platform"] != imgOld {
					t.Errorf("host %s desired %v after halt, want the old image", h, ds.Images)
				}
			}
			if got := Step(r, t0.Add(time.Hour), f.get); got != nil {
				t.Errorf("a halted rollout stepped: %v", got)
			}
		})
	}
}

func TestDesiredRolledBack(t *testing.T) {
	r := newRollout("h1")
	r.State, r.RollbackRevision = StateRolledBack, 3
	key, ds := Desired(r, "h1")
	if key != "rollback" || ds.Revision != 3 || ds.Images["platform"] != imgOld {
		t.Errorf("desired = %s %+v, want the old image at revision 3", key, ds)
	}
}
