package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/kglb/kglb/config"
)

// ErrNoDaemon is wrapped by the client errors when nothing answers: no
// socket, or a socket no process listens on.
var ErrNoDaemon = errors.New("no kglb daemon answers")

// ErrRejected is wrapped by RequestReload's error when the daemon loaded
// the files and will not run them: an invalid config or a guard refusal.
var ErrRejected = errors.New("reload rejected")

// Fetch reads /status from a running daemon's stats listener at addr
// (host:port): read-only, and reachable from afar when the stats address is.
func Fetch(addr string) (Status, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	st, err := getStatus(c, "http://"+addr)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return st, fmt.Errorf("read status from %s: %w: %w (is kglb running, and is its stats_address %s?)", addr, ErrNoDaemon, unwrapOpErr(err), addr)
		}
		return st, fmt.Errorf("read status from %s: %w", addr, err)
	}
	return st, nil
}

// FetchControl reads /status through the control socket at path.
func FetchControl(path string) (Status, error) {
	st, err := getStatus(controlClient(path, 10*time.Second), "http://kglb")
	if err != nil {
		return st, controlError("read status from", path, err)
	}
	return st, nil
}

func getStatus(c *http.Client, base string) (Status, error) {
	var st Status
	resp, err := c.Get(base + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, answerError(resp)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&st); err != nil {
		return st, err
	}
	return st, nil
}

// RequestReload asks the daemon behind the control socket at path to
// reload, and returns its answer: result success (applied) or unchanged.
// An invalid config or a guard refusal is an error wrapping ErrRejected
// with the daemon's reasons (file:line:col: message); force skips the
// max_delete_share guard.
func RequestReload(path string, force bool) (ReloadAnswer, error) {
	var a ReloadAnswer
	url := "http://kglb/reload"
	if force {
		url += "?force=1"
	}
	resp, err := controlClient(path, 30*time.Second).Post(url, "text/plain", nil)
	if err != nil {
		return a, controlError("request reload from", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnprocessableEntity {
		return a, controlError("request reload from", path, answerError(resp))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&a); err != nil {
		return a, fmt.Errorf("request reload from %s: %w", path, err)
	}
	if resp.StatusCode == http.StatusUnprocessableEntity {
		return a, fmt.Errorf("%w (%s); the last good config keeps running:\n%s", ErrRejected, a.Result, strings.TrimRight(a.Error, "\n"))
	}
	return a, nil
}

// controlClient speaks HTTP over the Unix socket at path.
func controlClient(path string, timeout time.Duration) *http.Client {
	var d net.Dialer
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

// controlError names the socket and says what to do about the usual
// failures: no daemon, or a user who may not use the socket.
func controlError(op, path string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%s %s: %w: %w (is kglb running? systemctl status kglb)", op, path, ErrNoDaemon, unwrapOpErr(err))
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%s %s: %w (the control socket is for root and the %s group; `kglb status -address` reads the stats listener)", op, path, unwrapOpErr(err), config.DaemonGroup)
	}
	return fmt.Errorf("%s %s: %w", op, path, err)
}

// answerError is a non-2xx answer's status and first line.
func answerError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	msg := strings.TrimSpace(string(body))
	if msg == "" {
		return errors.New(resp.Status)
	}
	return fmt.Errorf("%s: %s", resp.Status, msg)
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
