package dashboard

import (
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/events"
	"github.com/molecule-ai/molecule-agent/controlplane/rollout"
)

var funcs = template.FuncMap{
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return now.Sub(t).Round(time.Second).String() + " ago"
	},
	"utc":   func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"short": shortDigest,
	"pct": func(n, total int) int {
		if total == 0 {
			return 0
		}
		return n * 100 / total
	},
	"add1": func(i int) int { return i + 1 },
}

// shortDigest renders repo@sha256:abcdef… as repo@sha256:abcdef012345.
func shortDigest(ref string) string {
	repo, dg, ok := strings.Cut(ref, "@")
	if !ok {
		dg, repo = ref, ""
	}
	if len(dg) > 19 {
		dg = dg[:19]
	}
	if repo == "" {
		return dg
	}
	return repo + "@" + dg
}

// unitView is one unit of a host.
type unitView struct {
	Name, State, Image string
}

// hostView is one row of the hosts table.
type hostView struct {
	api.Host
	Tunnel string
	Units  []unitView
}

type waveView struct {
	N, Ready, Total int
	State           string
}

type rolloutView struct {
	rollout.Rollout
	Images []string
	Waves  []waveView
}

type pageData struct {
	Now               time.Time
	Refresh           int
	Query             string
	Org, Status       string
	Orgs              []string
	Statuses          []string
	Hosts             []hostView
	Total             int
	Rollouts          []rolloutView
	Events            []events.Event
	CSRF              string
	Err               string
	Online, NotOnline int
}

func tunnelState(h api.Host) string {
	if h.Report == nil || h.Report.Tunnel == nil {
		return "—"
	}
	if h.Report.Tunnel.ReadyConnections > 0 {
		return "ready"
	}
	return "not ready"
}

func (d *Dashboard) page(w http.ResponseWriter, r *http.Request) {
	id, ok := d.session(r)
	if !ok {
		d.render(w, "login.html", map[string]any{})
		return
	}
	q := r.URL.Query()
	data := pageData{Now: d.o.Now().UTC(), Refresh: int(d.o.Refresh.Seconds()), Org: q.Get("org"), Status: q.Get("status"),
		Statuses: []string{api.StatusOnline, api.StatusOffline, api.StatusRemoved}, CSRF: d.csrfToken(id)}
	keep := url.Values{}
	for _, k := range []string{"org", "status"} {
		if v := q.Get(k); v != "" {
			keep.Set(k, v)
		}
	}
	if len(keep) > 0 {
		data.Query = "?" + keep.Encode()
	}
	ctx := r.Context()
	hosts, err := d.o.Source.Hosts(ctx)
	if err != nil {
		d.o.Logger.Error("dashboard: list hosts", "err", err)
		data.Err = "listing hosts failed; the page retries on its next refresh"
	}
	orgs := map[string]bool{}
	for _, h := range hosts {
		orgs[h.Org] = true
		if h.Status == api.StatusOnline {
			data.Online++
		} else {
			data.NotOnline++
		}
		if (data.Org != "" && h.Org != data.Org) || (data.Status != "" && h.Status != data.Status) {
			continue
		}
		hv := hostView{Host: h, Tunnel: tunnelState(h)}
		if h.Report != nil {
			for _, u := range h.Report.Units {
				hv.Units = append(hv.Units, unitView{Name: u.Name, State: u.State, Image: u.Image})
			}
		}
		data.Hosts = append(data.Hosts, hv)
	}
	data.Total = len(hosts)
	for o := range orgs {
		data.Orgs = append(data.Orgs, o)
	}
	sort.Strings(data.Orgs)
	ros, err := d.o.Source.Rollouts(ctx)
	if err != nil {
		d.o.Logger.Error("dashboard: list rollouts", "err", err)
	}
	sort.Slice(ros, func(i, j int) bool { return ros[i].Channel < ros[j].Channel })
	for _, ro := range ros {
		data.Rollouts = append(data.Rollouts, viewRollout(ro))
	}
	if data.Events, err = d.o.Source.Events(ctx, 30); err != nil {
		d.o.Logger.Error("dashboard: list events", "err", err)
	}
	d.render(w, "page.html", data)
}

func viewRollout(ro rollout.Rollout) rolloutView {
	v := rolloutView{Rollout: ro}
	units := make([]string, 0, len(ro.To))
	for u := range ro.To {
		units = append(units, u)
	}
	slices.Sort(units)
	for _, u := range units {
		if ro.From[u] != ro.To[u] {
			v.Images = append(v.Images, u+": "+shortDigest(ro.From[u])+" → "+shortDigest(ro.To[u]))
		}
	}
	for i, w := range ro.Waves {
		st := "waiting"
		switch {
		case !w.DoneAt.IsZero():
			st = "done"
		case !w.ReadyAt.IsZero():
			st = "baking"
		case !w.StartedAt.IsZero():
			st = "updating"
		}
		if ro.State == rollout.StateCompleted {
			st = "done"
		}
		ready := len(w.Ready)
		if st == "done" {
			ready = len(w.Hosts)
		}
		v.Waves = append(v.Waves, waveView{N: i + 1, Ready: ready, Total: len(w.Hosts), State: st})
	}
	return v
}
