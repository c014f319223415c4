// The tests run TCP-MD5 sessions through GoBGP listeners, which need
// plain TCP listeners (see listenersUseMPTCP); the daemon sets the same.

//go:debug multipathtcp=0

package bgp

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// helperEnv makes the test binary act as a standalone speaker process (see
// runHelper) instead of running tests. The BIRD tests start it with
// `ip netns exec NS`, so that every socket GoBGP's goroutines open lives in
// the speaker's namespace, and so that the process can be stopped,
// frozen or killed like a real kglb.
const helperEnv = "KGLB_BGP_SPEAKER_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(runHelper())
	}
	os.Exit(m.Run())
}

// helperCmd is one request to the helper speaker, a JSON line on stdin.
type helperCmd struct {
	// Op is one of:
	//   start     New(Config)
	//   config    SetConfig(Config)
	//   apply     Apply(Routes)
	//   withdraw  start WithdrawAll in the background and reply at once
	//   hurry     cut the graceful-shutdown wait of withdraw short
	//   withdrawn wait for withdraw to finish and reply with its error
	//   status    reply with Status()
	//   plan      reply with Plan(Config, Routes)
	//   close     Close() and exit
	//   exit      Abandon() and exit, as the daemon's planned restart does
	Op     string  `json:"op"`
	Config *Config `json:"config,omitempty"`
	Routes []Route `json:"routes,omitempty"`
	// Restarting is Options.Restarting for start.
	Restarting bool `json:"restarting,omitempty"`
}

// helperReply is the answer to one helperCmd, a JSON line on stdout.
type helperReply struct {
	Err    string  `json:"err,omitempty"`
	Status *Status `json:"status,omitempty"`
	Plan   *Plan   `json:"plan,omitempty"`
}

// runHelper serves helperCmds until stdin closes or "close". It logs to
// stderr at Debug, which the test keeps in a file.
func runHelper() int {
	signal.Ignore(syscall.SIGPIPE)
	lg := hclog.New(&hclog.LoggerOptions{Name: "speaker", Level: hclog.Debug, Output: os.Stderr})
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<26)
	out := json.NewEncoder(os.Stdout)
	ctx := context.Background()
	var s *Speaker
	withdrawCtx, hurry := context.WithCancel(ctx)
	defer hurry()
	var withdrawDone chan error
	for in.Scan() {
		var c helperCmd
		var rep helperReply
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			rep.Err = "bad command: " + err.Error()
			out.Encode(rep)
			continue
		}
		var err error
		switch {
		case c.Op == "start":
			s, err = New(ctx, *c.Config, Options{Logger: lg, Restarting: c.Restarting})
		case s == nil:
			err = fmt.Errorf("%s before start", c.Op)
		case c.Op == "config":
			err = s.SetConfig(ctx, *c.Config)
		case c.Op == "apply":
			err = s.Apply(ctx, c.Routes)
		case c.Op == "withdraw":
			withdrawDone = make(chan error, 1)
			go func() { withdrawDone <- s.WithdrawAll(withdrawCtx) }()
		case c.Op == "hurry":
			hurry()
		case c.Op == "withdrawn":
			if withdrawDone == nil {
				err = fmt.Errorf("withdrawn before withdraw")
			} else {
				err = <-withdrawDone
			}
		case c.Op == "status":
			st := s.Status()
			rep.Status = &st
		case c.Op == "plan":
			var p Plan
			p, err = s.Plan(*c.Config, c.Routes)
			rep.Plan = &p
		case c.Op == "exit":
			s.Abandon()
			out.Encode(rep)
			return 0
		case c.Op == "close", c.Op == "close-restart":
			if c.Op == "close" {
				err = s.Close()
			} else {
				err = s.CloseForRestart()
			}
			if err != nil {
				rep.Err = err.Error()
			}
			out.Encode(rep)
			return 0
		default:
			err = fmt.Errorf("unknown op %q", c.Op)
		}
		if err != nil {
			rep.Err = err.Error()
		}
		if err := out.Encode(rep); err != nil {
			lg.Error("reply", "err", err)
			return 1
		}
	}
	lg.Info("stdin closed")
	if s != nil {
		s.Close()
	}
	return 0
}
