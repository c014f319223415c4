package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
	"github.com/kglb/kglb/lb"
	"github.com/kglb/kglb/vip"
)

// PlanAnswer is the JSON answer of POST /plan on the control socket, and
// what `kglb plan -json` prints (docs/plan.md).
type PlanAnswer struct {
	// Result is planned (the config is valid and the guard lets it
	// through), failure (invalid config: Error has file:line:col lines) or
	// refused (the delete guard would refuse the reload: Error says why;
	// Plan is still there).
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
	// Dir is the directory planned.
	Dir string `json:"dir"`
	// Guard is the delete guard's verdict: "pass" or its refusal.
	Guard string `json:"guard,omitempty"`
	// Offline is set by `kglb plan --offline`: planned against the kernel
	// with no daemon, so with no health (every real starts unknown, as at
	// a start) and no BGP.
	Offline bool `json:"offline"`
	// Changes is whether applying the config would change anything.
	Changes bool `json:"changes"`
	// Summary is the plan in one line.
	Summary string     `json:"summary,omitempty"`
	Plan    *lb.Review `json:"plan,omitempty"`
}

// planAnswer loads dir as a candidate with the daemon's loader, runs the
// guard against the running config and asks the engine for its plan.
func planAnswer(ctx context.Context, dir string, running *config.Config, guard func(old, new *config.Config) error, plan func(context.Context, *config.Config) (lb.Review, error)) (PlanAnswer, error) {
	a := PlanAnswer{Dir: dir}
	cfg, err := config.Load(dir)
	if err != nil {
		a.Result, a.Error = "failure", err.Error()
		return a, nil
	}
	a.Result, a.Guard = "planned", "pass"
	if guard != nil && running != nil {
		if gerr := guard(running, cfg); gerr != nil {
			a.Result, a.Guard, a.Error = "refused", gerr.Error(), gerr.Error()
		}
	}
	r, err := plan(ctx, cfg)
	if err != nil {
		return a, err
	}
	a.Plan, a.Changes, a.Summary = &r, !r.Empty(), r.Summary()
	return a, nil
}

// servePlan answers POST /plan?dir=DIR: it changes nothing, so it logs at
// Debug.
func (d *daemon) servePlan(log hclog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		dir := r.URL.Query().Get("dir")
		if dir == "" {
			dir = d.dir
		}
		if !filepath.IsAbs(dir) {
			http.Error(w, "plan: dir must be an absolute path", http.StatusBadRequest)
			return
		}
		p := r.Context().Value(peerKey{}).(peer)
		log.Debug("plan requested", "op", "plan", "dir", dir, "uid", p.UID, "gid", p.GID, "pid", p.PID)
		ctx, cancel := context.WithTimeout(r.Context(), 25*time.Second)
		defer cancel()
		a, err := planAnswer(ctx, dir, d.engine.Config(), d.guard, d.engine.PlanConfig)
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			a.Error = "plan: " + err.Error()
		}
		json.NewEncoder(w).Encode(a)
	}
}

// RequestPlan asks the daemon behind the control socket at path for the
// plan of the config directory dir (absolute).
func RequestPlan(path, dir string) (PlanAnswer, error) {
	var a PlanAnswer
	resp, err := controlClient(path, 30*time.Second).Post("http://kglb/plan?dir="+url.QueryEscape(dir), "text/plain", nil)
	if err != nil {
		return a, controlError("request plan from", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if resp.Header.Get("Content-Type") == "application/json" {
			if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&a) == nil && a.Error != "" {
				return a, fmt.Errorf("request plan from %s: %s", path, a.Error)
			}
		}
		return a, controlError("request plan from", path, answerError(resp))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 256<<20)).Decode(&a); err != nil {
		return a, fmt.Errorf("request plan from %s: %w", path, err)
	}
	return a, nil
}

// Colours of WritePlan on a terminal.
const (
	green  = "\x1b[32m"
	red    = "\x1b[31m"
	yellow = "\x1b[33m"
	reset  = "\x1b[0m"
)

// WritePlan prints a plan like a review: grouped by VIP and service, +
// added, - removed, ~ changed, with ANSI colours when color is set.
func WritePlan(w io.Writer, a PlanAnswer, color bool) {
	paint := func(act, s string) string {
		if !color {
			return s
		}
		switch act {
		case lb.ActAdd:
			return green + s + reset
		case lb.ActRemove:
			return red + s + reset
		case lb.ActChange:
			return yellow + s + reset
		}
		return s
	}
	fmt.Fprintf(w, "kglb plan %s\n", a.Dir)
	if a.Offline {
		fmt.Fprintln(w, "OFFLINE: planned against the kernel state kglb owns, with no daemon: no health (every real starts unknown, as at a start) and no BGP")
	}
	if a.Result == "failure" {
		fmt.Fprintf(w, "\ninvalid config:\n%s\n", strings.TrimRight(a.Error, "\n"))
		return
	}
	r := a.Plan
	if r == nil {
		return
	}
	if !a.Offline { // the OFFLINE line says it
		for _, n := range r.Notes {
			fmt.Fprintf(w, "note: %s\n", n)
		}
	}
	fmt.Fprintln(w)
	if r.Empty() {
		fmt.Fprintln(w, "no changes")
	}
	vip := "\x00"
	for _, s := range r.Services {
		if s.VIP != vip {
			vip = s.VIP
			name := vip
			if name == "" {
				name = "(no vip)"
			}
			fmt.Fprintf(w, "vip %s\n", name)
		}
		fmt.Fprintf(w, "  %s\n", paint(s.Action, s.Text()))
		for _, f := range s.Fields {
			fmt.Fprintf(w, "      %s\n", paint(lb.ActChange, f.Text()))
		}
		for _, rl := range s.Reals {
			act := rl.Action
			if rl.Drain != "" {
				act = lb.ActRemove
			}
			fmt.Fprintf(w, "    %s\n", paint(act, rl.Text()))
		}
		if len(s.HealthUnknown) > 0 {
			fmt.Fprintf(w, "    %s\n", s.HealthText())
		}
	}
	if len(r.VIPs) > 0 {
		fmt.Fprintln(w, "vips")
		for _, v := range r.VIPs {
			fmt.Fprintf(w, "  %s\n", paint(v.Action, v.Text()))
		}
	}
	if len(r.Neighbors) > 0 {
		// Per neighbor, as each receives them.
		for _, n := range r.Neighbors {
			fmt.Fprintf(w, "bgp %s\n", paint(n.Session, n.Text()))
			for _, rt := range n.Routes {
				fmt.Fprintf(w, "  %s\n", paint(rt.Action, rt.Text()))
			}
		}
	} else {
		// No neighbor says what it gets (no speaker, or an answer
		// without "neighbors"): what the speaker is handed.
		if len(r.Routes) > 0 {
			fmt.Fprintln(w, "bgp routes (as handed to the speaker)")
			for _, rt := range r.Routes {
				fmt.Fprintf(w, "  %s\n", paint(rt.Action, rt.Text()))
			}
		}
		if len(r.Sessions) > 0 {
			fmt.Fprintln(w, "bgp sessions")
			for _, x := range r.Sessions {
				fmt.Fprintf(w, "  %s\n", paint(x.Action, x.Text()))
			}
		}
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "would fail: %s\n", e)
	}
	fmt.Fprintf(w, "\nguard: %s\n", a.Guard)
	fmt.Fprintf(w, "plan: %s\n", a.Summary)
}

// noProber knows no health target: every real starts unknown.
type noProber struct{}

func (noProber) Update([]health.Target) error               { return nil }
func (noProber) Changes() <-chan []health.Change            { return nil }
func (noProber) Lookup(health.Target) (health.Status, bool) { return health.Status{}, false }

// PlanOffline plans dir with no daemon: against the IPVS services and VIPs
// kglb owns (the kernel read as root, and the ownership records in the
// config's state_dir), with no health and no BGP. It is what a daemon
// started now with dir would write at its first pass.
func PlanOffline(ctx context.Context, dir string) (PlanAnswer, error) {
	a := PlanAnswer{Dir: dir, Offline: true}
	cfg, err := config.Load(dir)
	if err != nil {
		a.Result, a.Error = "failure", err.Error()
		return a, nil
	}
	a.Result, a.Guard = "planned", "not run (offline: no running config to compare with)"
	kernel, err := ipvs.NewNetlink("")
	if err != nil {
		return a, err
	}
	defer kernel.Close()
	ir, err := ipvs.NewReconciler(kernel, ipvs.Options{StateDir: cfg.Daemon.StateDir})
	if err != nil {
		return a, err
	}
	link, err := vip.NewNetlink(vip.NetlinkOptions{Link: cfg.Daemon.VIPInterface})
	if err != nil {
		return a, err
	}
	defer link.Close()
	mode := vip.ModeRoute
	if cfg.Daemon.VIPMode == config.VIPModeAddress {
		mode = vip.ModeAddress
	}
	vr, err := vip.New(vip.Options{Kernel: link, Mode: mode, StateDir: cfg.Daemon.StateDir})
	if err != nil {
		return a, err
	}
	e, err := lb.NewEngine(lb.Options{IPVS: ir, VIPs: vr, Prober: noProber{}}, cfg)
	if err != nil {
		return a, err
	}
	r, err := e.PlanStart(ctx)
	if err != nil {
		return a, err
	}
	r.Notes = append(r.Notes, "offline: no health (every real starts unknown, as at a start) and no BGP")
	a.Plan, a.Changes, a.Summary = &r, !r.Empty(), r.Summary()
	return a, nil
}
