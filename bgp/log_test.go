package bgp

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

func TestGoBGPLogger(t *testing.T) {
	tests := []struct {
		name  string
		level hclog.Level
		log   func(l *gobgpLogger)
		want  string // "" means nothing is written
	}{
		{"info is debug noise", hclog.Info, func(l *gobgpLogger) { l.Info("Add a peer configuration", gobgplog.Fields{"Key": "192.0.2.1"}) }, ""},
		{"info at debug", hclog.Debug, func(l *gobgpLogger) { l.Info("Add a peer configuration", gobgplog.Fields{"Key": "192.0.2.1"}) },
			"[DEBUG] gobgp: Add a peer configuration: Key=192.0.2.1"},
		{"warn passes with sorted fields", hclog.Info, func(l *gobgpLogger) {
			l.Warn("hold timer expired", gobgplog.Fields{"Topic": "Peer", "Key": "192.0.2.1", "Err": errors.New("boom")})
		}, "[WARN]  gobgp: hold timer expired: Err=boom Key=192.0.2.1 Topic=Peer"},
		{"facility dropped", hclog.Info, func(l *gobgpLogger) {
			l.Error("bad", gobgplog.Fields{gobgplog.FieldFacility: gobgplog.FacilityConfig})
		}, "[ERROR] gobgp: bad\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := &gobgpLogger{log: hclog.New(&hclog.LoggerOptions{Name: "gobgp", Level: tt.level, Output: &buf})}
			tt.log(l)
			if tt.want == "" && buf.Len() != 0 || !strings.Contains(buf.String(), tt.want) {
				t.Errorf("logged %q, want %q", buf.String(), tt.want)
			}
		})
	}
}

func TestGoBGPLoggerLevelAndPeerErrors(t *testing.T) {
	levels := []struct {
		in   hclog.Level
		want gobgplog.LogLevel
	}{
		{hclog.Trace, gobgplog.TraceLevel}, {hclog.Debug, gobgplog.DebugLevel},
		{hclog.Info, gobgplog.InfoLevel}, {hclog.Warn, gobgplog.WarnLevel}, {hclog.Error, gobgplog.ErrorLevel},
	}
	for _, tt := range levels {
		l := &gobgpLogger{log: hclog.New(&hclog.LoggerOptions{Level: tt.in})}
		if got := l.GetLevel(); got != tt.want {
			t.Errorf("GetLevel at %s = %d, want %d", tt.in, got, tt.want)
		}
	}
	var got []string
	l := &gobgpLogger{log: hclog.NewNullLogger(), onPeerEvent: func(addr, msg string) { got = append(got, addr+" "+msg) }}
	l.Info("Peer Down", gobgplog.Fields{"Key": "192.0.2.1", "Reason": "hold timer expired"})
	l.Info("Peer Up", gobgplog.Fields{"Key": "192.0.2.1"})
	l.Warn("failed to set md5", gobgplog.Fields{"Key": "192.0.2.2", "Err": "protocol not available"})
	l.Warn("no peer", gobgplog.Fields{"Topic": "Table"})
	want := []string{"192.0.2.1 Peer Down: hold timer expired", "192.0.2.2 failed to set md5: protocol not available"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("peer errors = %q, want %q", got, want)
	}
}
