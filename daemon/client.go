package daemon

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"
)

// Fetch reads /status from a running daemon at addr (host:port).
func Fetch(addr string) (Status, error) {
	var st Status
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/status")
	if err != nil {
		return st, fmt.Errorf("read status from %s: %w (is kglb running, and is its stats_address %s?)", addr, err, addr)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("read status from %s: %s", addr, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&st); err != nil {
		return st, fmt.Errorf("read status from %s: %w", addr, err)
	}
	return st, nil
}

// RequestReload asks a running daemon to reload and returns its answer
// ("config success" or "config unchanged"), or the daemon's reason for
// rejecting the files; force skips the max_delete_share guard.
func RequestReload(addr string, force bool) (string, error) {
	c := &http.Client{Timeout: 30 * time.Second}
	url := "http://" + addr + "/reload"
	if force {
		url += "?force=1"
	}
	resp, err := c.Post(url, "text/plain", nil)
	if err != nil {
		return "", fmt.Errorf("request reload from %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	msg := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("reload %s: %s", addr, msg)
	}
	return msg, nil
}

// WriteStatus prints st as readable tables: VIPs, services with their
// reals, BGP peers.
func WriteStatus(w io.Writer, st Status, now time.Time) {
	switch {
	case st.Config.RunningLastApplied:
		fmt.Fprintf(w, "CONFIG REJECTED AT START (the config applied at %s runs):\n%s\n\n", st.Config.LastAppliedAt.Format(time.RFC3339), st.Config.LastReloadError)
	case st.Config.LastReloadError != "":
		fmt.Fprintf(w, "CONFIG REJECTED (the last good config runs):\n%s\n\n", st.Config.LastReloadError)
	}
	if st.Config.Settling {
		fmt.Fprintf(w, "deletions wait for the config files to settle\n\n")
	}
	if st.Error != "" {
		fmt.Fprintf(w, "last reconcile error: %s\n\n", st.Error)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VIP\tANNOUNCED\tREASON\tSERVICES")
	for _, v := range st.VIPs {
		ann := "no"
		if v.Announced {
			ann = "yes"
			if v.Degraded {
				ann = "degraded"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.VIP, ann, v.Reason, strings.Join(v.Services, ","))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tENDPOINT\tREAL\tSTATE\tWEIGHT\tSINCE\tREASON")
	for _, s := range st.Services {
		fmt.Fprintf(tw, "%s\t%s\t%d/%d healthy\t\t\t\t%s\n", s.Name, s.Endpoint, s.Healthy, s.Total, s.Reason)
		for _, r := range s.Reals {
			state := r.State
			if !r.Enabled {
				state = "disabled"
			}
			since, reason := "", ""
			for _, c := range r.Checks {
				if c.State != "up" || reason == "" {
					reason = c.Type + ": " + c.Reason
					if !c.Since.IsZero() {
						since = now.Sub(c.Since).Truncate(time.Second).String() + " ago"
					}
				}
			}
			fmt.Fprintf(tw, "\t\t%s\t%s\t%d\t%s\t%s\n", r.Address, state, r.Weight, since, reason)
		}
	}
	tw.Flush()
	if st.BGP != nil {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "BGP PEER\tADDRESS\tASN\tSTATE\tUPTIME\tSENT\tFLAPS\tLAST ERROR\n")
		for _, p := range st.BGP.Peers {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%d\t%s\n", p.Name, p.Address, p.ASN, p.State,
				(time.Duration(p.UptimeSeconds) * time.Second).String(), p.PrefixesSent, p.Flaps, p.LastError)
		}
		tw.Flush()
	}
}
